"""``jsd chirpstack``: the bridge daemon, the ChirpStack configuration for our Join Server, the application side.

Loaded by ``jsd`` at start-up for every command, so this module imports only click; grpc, chirpstack_api and
the bridge are imported inside the command bodies.
"""

from __future__ import annotations

import click


@click.group()
def chirpstack() -> None:
    """ChirpStack v4 (>= 4.6) bridge: registry sync, configuration, application-side decryption."""
