"""``jsd audit``: the append-only log of ownership and key actions this account may read.

``--follow`` polls for new entries (after the last id seen) until interrupted; with ``--json`` it prints one
entry per line (JSON Lines) so a script can consume the stream.
"""

from __future__ import annotations

import click

from jsd_cli.output import json_option
from jsd_cli.remote import Context, pass_context, show_log

AUDIT_COLUMNS = (
    ("ID", "id"),
    ("AT", "at"),
    ("ACCOUNT", "account"),
    ("SOURCE", "source"),
    ("ACTION", "action"),
    ("DEV_EUI", "dev_eui"),
    ("DETAILS", "details"),
)


def _params(dev_eui: str | None, after: int | None, limit: int) -> dict[str, str]:
    params = {"limit": str(limit)}
    if dev_eui:
        params["dev_eui"] = dev_eui
    if after is not None:
        params["after"] = str(after)
    return params


@click.command("audit")
@click.option("--dev-eui", help="Only entries about this device.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Entries per request.")
@click.option("--after", type=int, help="Only entries after this id (the 'next' of an earlier answer).")
@click.option("--follow", "-f", is_flag=True, help="Keep polling for new entries until interrupted.")
@click.option("--interval", type=click.FloatRange(0.1), default=2.0, show_default=True, help="Seconds between polls.")
@json_option
@pass_context
def audit(
    obj: Context, dev_eui: str | None, limit: int, after: int | None, follow: bool, interval: float, as_json: bool
) -> None:
    """Who did what to which device, and when (never keys or tokens)."""
    query = lambda cursor: _params(dev_eui, cursor, limit)  # noqa: E731
    show_log(obj, "/audit", "entries", "id", AUDIT_COLUMNS, query, after, follow, interval, as_json)
