"""``jsd claim``: take a device over with its DevEUI and owner token, or with the QR code on its label.

The owner token is a secret until it is spent, so it comes from a file, stdin or a hidden prompt. The QR
string may be given on the command line: it is printed on the device anyway.
"""

from __future__ import annotations

import click

from jsd_cli.devices import show_device
from jsd_cli.output import json_option
from jsd_cli.remote import Context, pass_context, read_secret


@click.command("claim")
@click.argument("dev_eui", required=False)
@click.option("--token-file", help="File with the owner token ('-' = stdin); without it you are prompted.")
@click.option("--qr", help="The TR005 string of the label (LW:D0:...) instead of DEV_EUI and a token.")
@click.option("--qr-file", help="File with the TR005 string ('-' = stdin).")
@json_option
@pass_context
def claim(
    obj: Context, dev_eui: str | None, token_file: str | None, qr: str | None, qr_file: str | None, as_json: bool
) -> None:
    """Claim a device: it moves to this account and its token is spent for good."""
    if qr is not None or qr_file is not None:
        if dev_eui is not None or token_file is not None or (qr is not None and qr_file is not None):
            raise click.UsageError("give DEV_EUI with a token, or one of --qr / --qr-file")
        body = {"qr": qr if qr is not None else read_secret(qr_file, "QR string")}
    elif dev_eui is None:
        raise click.UsageError("give DEV_EUI (and the owner token), or --qr / --qr-file")
    else:
        body = {"dev_eui": dev_eui, "owner_token": read_secret(token_file, "owner token")}
    device = obj.run(lambda api: api.call("POST", "/claims", body=body))
    if not as_json:
        click.echo(f"claimed {device['dev_eui']}")
    show_device(as_json, device)
