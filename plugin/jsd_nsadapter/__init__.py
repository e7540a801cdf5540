"""What every network-server adapter of jsd shares: the adapter contract, and the bridge that drives it.

The bridge keeps one application of a network server in step with a subscriber's claims on the Join Server;
the network server itself is behind an ``NsAdapter`` found by name in the ``jsd.ns_adapters`` entry-point
group (``jsd_chirpstack`` registers ``chirpstack``). Nothing here names a network server's API.
Submodules: ``contract`` (``NsAdapter``, its values and errors, ``load_adapter``), ``bridge`` (the loop),
``jsclient`` (the Join Server's REST API as a subscriber), ``settings`` (TOML and secret-file helpers).
"""
