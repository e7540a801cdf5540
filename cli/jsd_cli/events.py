"""``jsd events``: the events of one's own devices (claims, NetID/ASTK changes, joins), without an MQTT client.

They are the events the daemon publishes to MQTT, read from ``GET /api/v1/events`` (kept there up to
``ownership.event_retention``). ``--follow`` polls for new ones after the last ``seq`` seen until interrupted;
with ``--json`` it prints one event per line (JSON Lines), the same objects MQTT subscribers get.
"""

from __future__ import annotations

from typing import Any

import click

from jsd_cli.output import json_option
from jsd_cli.remote import Context, log_options, pass_context, show_log

EVENT_COLUMNS = (("SEQ", "seq"), ("TIME", "time"), ("TYPE", "type"), ("DEV_EUI", "dev_eui"), ("DATA", "data"))


@click.command("events")
@click.option("--dev-eui", help="Only events of this device.")
@click.option("--type", "kind", help="Only events of this type (e.g. device.claimed, join.accepted).")
@log_options("events", "seq")
@json_option
@pass_context
def events(obj: Context, /, dev_eui: str | None, kind: str | None, as_json: bool, **page: Any) -> None:
    """Events of this account's devices, oldest first (what MQTT subscribers get; never keys or tokens)."""
    show_log(obj, "/events", "events", "seq", EVENT_COLUMNS, {"dev_eui": dev_eui, "type": kind}, as_json, **page)
