"""``jsd audit``: the append-only log of ownership and key actions this account may read.

``--follow`` polls for new entries (after the last id seen) until interrupted; with ``--json`` it prints one
entry per line (JSON Lines) so a script can consume the stream.
"""

from __future__ import annotations

from typing import Any

import click

from jsd_cli.output import json_option
from jsd_cli.remote import Context, log_options, pass_context, show_log

AUDIT_COLUMNS = (
    ("ID", "id"),
    ("AT", "at"),
    ("ACCOUNT", "account"),
    ("SOURCE", "source"),
    ("ACTION", "action"),
    ("DEV_EUI", "dev_eui"),
    ("DETAILS", "details"),
)


@click.command("audit")
@click.option("--dev-eui", help="Only entries about this device.")
@log_options("entries", "id")
@json_option
@pass_context
def audit(obj: Context, /, dev_eui: str | None, as_json: bool, **page: Any) -> None:
    """Who did what to which device, and when (never keys or tokens)."""
    show_log(obj, "/audit", "entries", "id", AUDIT_COLUMNS, {"dev_eui": dev_eui}, as_json, **page)
