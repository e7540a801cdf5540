"""``jsd hsm``: prepare the HSM and import KEKs and lot master keys, on the daemon's machine (local only).

Keys are read from files or standard input, never from the command line; they go into the token and are
never readable again.
"""

from __future__ import annotations

import json
from typing import Any

import click

from jsd_cli import bootstrap
from jsd_cli.inputs import read_secret_hex
from jsd_cli.remote import Context, pass_context


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


def _import(obj: Context, label: str, key: bytes, lot_master_key: bool) -> None:
    """Put ``key`` into the token under ``label``: a wrap-only KEK, or a derive-only lot master key."""

    async def body() -> None:
        async with bootstrap.opened_hsm(obj.settings()) as hsm:
            if lot_master_key:
                await hsm.import_lot_master_key(label, key)
            else:
                await hsm.import_kek(label, key)

    bootstrap.run(body())


@click.group()
def hsm() -> None:
    """Prepare the HSM and import KEKs."""


@hsm.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def hsm_init(obj: Context, as_json: bool) -> None:
    """Create the SoftHSM2 token (embedded default) and the storage KEK; idempotent."""
    from jsd.serve import prepare

    bootstrap.run(prepare(obj.settings()))
    _emit(as_json, {"ready": True}, "HSM ready")


@hsm.command("import-kek")
@click.argument("label")
@click.option("--key-file", required=True, help="File holding the 16-byte KEK as hex ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def hsm_import_kek(obj: Context, label: str, key_file: str, as_json: bool) -> None:
    """Import a KEK (NS KEK or ASTK) as a wrap-only token object under LABEL."""
    _import(obj, label, read_secret_hex(key_file, "KEK"), lot_master_key=False)
    _emit(as_json, {"label": label}, f"imported KEK {label}")


@hsm.command("import-lmk")
@click.option("--se-manuf-id", type=click.IntRange(0, 15), required=True, help="SE_MANUF_ID of the TKM info.")
@click.option("--se-prod-id", type=click.IntRange(0, 15), required=True, help="SE_PROD_ID of the TKM info.")
@click.option("--lmk-id", type=click.IntRange(0, 15), required=True, help="LMK_ID of the TKM info.")
@click.option("--key-file", required=True, help="File holding the 16-byte lot master key as hex ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def hsm_import_lmk(obj: Context, se_manuf_id: int, se_prod_id: int, lmk_id: int, key_file: str, as_json: bool) -> None:
    """Import a secure-element lot master key (DERIVE only, never readable again).

    Devices imported with TKM info naming these ids get their root keys derived from it inside the HSM.
    """
    from jsd.ownership.se import TkmInfo, lot_master_key_label

    key = read_secret_hex(key_file, "lot master key")
    label = lot_master_key_label(TkmInfo(se_manuf_id, se_prod_id, lmk_id, 0, bytes(8)))
    _import(obj, label, key, lot_master_key=True)
    _emit(as_json, {"label": label}, f"imported lot master key {label}")
