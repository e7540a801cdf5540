"""ChirpStack v4 bridge for jsd: devices claimed on the Join Server appear in ChirpStack without root keys.

Needs ChirpStack v4.6 or later: from v4.6 ChirpStack asks an external Join Server only for devices that have
no keys of their own, and passes KEK-wrapped AppSKeys through to the application (end-to-end encryption).
Submodules: ``adapter`` (the network-server adapter contract), ``chirpstack`` (its gRPC implementation),
``bridge`` (the daemon), ``appserver`` (the application side), ``cli`` (``jsd chirpstack …``).
"""
