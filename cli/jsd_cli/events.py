"""``jsd events``: the events of one's own devices (claims, NetID/ASTK changes, joins), without an MQTT client.

They are the events the daemon publishes to MQTT, read from ``GET /api/v1/events`` (kept there up to
``ownership.event_retention``). ``--follow`` polls for new ones after the last ``seq`` seen until interrupted;
with ``--json`` it prints one event per line (JSON Lines), the same objects MQTT subscribers get.
"""

from __future__ import annotations

import click

from jsd_cli.output import json_option
from jsd_cli.remote import Context, pass_context, show_log

EVENT_COLUMNS = (("SEQ", "seq"), ("TIME", "time"), ("TYPE", "type"), ("DEV_EUI", "dev_eui"), ("DATA", "data"))


def _params(dev_eui: str | None, kind: str | None, after: int | None, limit: int) -> dict[str, str]:
    params = {"limit": str(limit)}
    if dev_eui:
        params["dev_eui"] = dev_eui
    if kind:
        params["type"] = kind
    if after is not None:
        params["after"] = str(after)
    return params


@click.command("events")
@click.option("--dev-eui", help="Only events of this device.")
@click.option("--type", "kind", help="Only events of this type (e.g. device.claimed, join.accepted).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Events per request.")
@click.option("--after", type=int, help="Only events after this seq (the 'next' of an earlier answer).")
@click.option("--follow", "-f", is_flag=True, help="Keep polling for new events until interrupted.")
@click.option("--interval", type=click.FloatRange(0.1), default=2.0, show_default=True, help="Seconds between polls.")
@json_option
@pass_context
def events(
    obj: Context,
    dev_eui: str | None,
    kind: str | None,
    limit: int,
    after: int | None,
    follow: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Events of this account's devices, oldest first (what MQTT subscribers get; never keys or tokens)."""
    query = lambda cursor: _params(dev_eui, kind, cursor, limit)  # noqa: E731
    show_log(obj, "/events", "events", "seq", EVENT_COLUMNS, query, after, follow, interval, as_json)
