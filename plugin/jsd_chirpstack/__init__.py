"""ChirpStack v4 bridge for jsd: devices claimed on the Join Server appear in ChirpStack without root keys.

Needs ChirpStack v4.12 or later (``apiuse.MINIMUM_CHIRPSTACK``): from v4.6 ChirpStack asks an external Join
Server only for devices that have no keys of their own and passes KEK-wrapped AppSKeys through to the
application (end-to-end encryption); v4.12 added the Join Server ``authorization_header`` and the device
list's ``order_by`` and ``tags`` that the bridge uses. ``apiuse`` lists every piece with its release.
Submodules: ``chirpstack`` (the ``jsd_nsadapter`` contract over ChirpStack's gRPC API), ``appserver`` (the
application side), ``nsconfig`` (ChirpStack's Join Server configuration), ``cli`` (``jsd chirpstack …``, which
runs the bridge of ``jsd_nsadapter``).
"""
