"""``jsd accounts``: accounts and their API keys, through the daemon's API.

One command has a local mode: ``accounts create`` without an API key (or with ``--local``) opens the
configured database and HSM as the local operator (jsd_cli.bootstrap), which is how the first operator
account is made (``jsd accounts create admin --kind operator``). It prints the API's JSON shapes (docs/api.md).
"""

from __future__ import annotations

from typing import Any

import click

from jsd_cli import bootstrap, output
from jsd_cli.output import json_option
from jsd_cli.remote import Context, check_new_file, emit_secret, pass_context, segment, show_list

KINDS = ("manufacturer", "subscriber", "operator")
ACCOUNT_COLUMNS = (("ID", "id"), ("KIND", "kind"), ("NAME", "name"), ("CREATED", "created_at"))
KEY_COLUMNS = (("KEY_ID", "key_id"), ("SCOPES", "scopes"), ("CREATED", "created_at"), ("REVOKED", "revoked_at"))


@click.group()
def accounts() -> None:
    """Accounts and API keys (operator; a key holder may manage its own keys)."""


@accounts.command("create")
@click.argument("account_id")
@click.option("--kind", type=click.Choice(KINDS), required=True)
@click.option("--name", help="Display name.")
@click.option("--out", help="Write the new API key to this new 0600 file instead of printing it ('-' = stdout, the key alone).")
@json_option
@pass_context
def account_create(obj: Context, account_id: str, kind: str, name: str | None, out: str | None, as_json: bool) -> None:
    """Create an account and its first API key (shown once)."""
    if as_json and out == "-":
        raise click.UsageError("--json prints to stdout: give --out FILE")
    check_new_file(out)
    if obj.remote:
        payload = {"id": account_id, "kind": kind} | ({"name": name} if name is not None else {})
        answer = obj.run(lambda api: api.call("POST", "/accounts", body=payload))
    else:
        answer = bootstrap.create_account(obj, account_id, kind, name)
    _show_new_key(answer["api_key"], out, as_json, answer, f"account {answer['account']['id']} ({kind}) created")


def _show_new_key(key: dict[str, Any], out: str | None, as_json: bool, answer: dict[str, Any], headline: str) -> None:
    """The key goes to --out when given (the JSON then says null), else into the output once.

    With ``--out -`` standard output carries the key alone (the rest goes to stderr), so it can be redirected
    into a file, e.g. out of a container: ``docker compose exec -T … --out - > secrets/bridge_api_key``.
    """
    to_stderr = out == "-"
    if not as_json:
        click.echo(headline, err=to_stderr)
    if out is not None:
        emit_secret(out, key["key"], f"API key {key['key_id']}", note_to_stderr=as_json)
        key["key"] = None
    if as_json:
        output.print_json(answer)
        return
    if out is None:
        emit_secret(None, key["key"], f"API key {key['key_id']}")
    click.echo(f"scopes: {' '.join(key['scopes'])}", err=to_stderr)


@accounts.command("list")
@json_option
@pass_context
def account_list(obj: Context, as_json: bool) -> None:
    """All accounts."""
    show_list(obj, "/accounts", "accounts", ACCOUNT_COLUMNS, as_json)


@accounts.command("keys")
@click.argument("account_id")
@json_option
@pass_context
def account_keys(obj: Context, account_id: str, as_json: bool) -> None:
    """The API keys of an account (ids and scopes; secrets are never stored)."""
    show_list(obj, f"/accounts/{segment(account_id)}/keys", "keys", KEY_COLUMNS, as_json)


@accounts.command("create-key")
@click.argument("account_id")
@click.option("--scope", "scopes", multiple=True, help="Limit the key to these scopes (repeat); default: the kind's.")
@click.option("--out", help="Write the new API key to this new 0600 file instead of printing it ('-' = stdout, the key alone).")
@json_option
@pass_context
def account_create_key(obj: Context, account_id: str, scopes: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Another API key for an account (e.g. one per integration, with fewer scopes)."""
    if as_json and out == "-":
        raise click.UsageError("--json prints to stdout: give --out FILE")
    check_new_file(out)
    wanted = list(scopes) or None
    path = f"/accounts/{segment(account_id)}/keys"
    answer = obj.run(lambda api: api.call("POST", path, body={"scopes": wanted} if wanted else {}))
    _show_new_key(answer, out, as_json, answer, f"new API key for {account_id}")


@accounts.command("revoke-key")
@click.argument("key_id")
@json_option
@pass_context
def account_revoke_key(obj: Context, key_id: str, as_json: bool) -> None:
    """Revoke an API key: from now on it fails like an unknown one."""
    obj.run(lambda api: api.call("DELETE", f"/keys/{segment(key_id)}"))
    if as_json:
        output.print_json({"key_id": key_id, "revoked": True})
    else:
        click.echo(f"API key {key_id} revoked")
