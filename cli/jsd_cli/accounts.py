"""``jsd accounts``: accounts and their API keys, through the API or directly on the local database.

With an API key (``--api-key-file`` or ``JSD_API_KEY``) the commands call the daemon; without one they open
the configured database and HSM as the local operator, which is how the first operator account is made
(``jsd accounts create admin --kind operator``). Both modes print the same JSON shapes (docs/api.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jsd_cli import output
from jsd_cli.output import json_option
from jsd_cli.remote import Context, check_new_file, emit_secret, pass_context, segment

if TYPE_CHECKING:
    from jsd.ownership import Ownership, Principal

T = TypeVar("T")

KINDS = ("manufacturer", "subscriber", "operator")
ACCOUNT_COLUMNS = (("ID", "id"), ("KIND", "kind"), ("NAME", "name"), ("CREATED", "created_at"))
KEY_COLUMNS = (("KEY_ID", "key_id"), ("SCOPES", "scopes"), ("CREATED", "created_at"), ("REVOKED", "revoked_at"))
LOCAL_SOURCE = "cli-local"


@asynccontextmanager
async def local_service(obj: Context) -> AsyncIterator[tuple[Ownership, Principal]]:
    """The ownership service on the configured database and HSM (built as jsd.app does), as the local operator."""
    from jsd.app import hsm_settings, ownership_policy
    from jsd.config import database_url
    from jsd.hsm import Hsm
    from jsd.ownership import SCOPES, AccountKind, Ownership, OwnershipStores, Principal
    from jsd.registry import Registry, create_engine
    from jsd.serve import prepare

    settings = obj.settings()
    await prepare(settings)
    engine = create_engine(database_url(settings))
    hsm = await Hsm.open(hsm_settings(settings))
    try:
        service = Ownership.build(OwnershipStores.on(engine), Registry(engine), hsm, ownership_policy(settings))
        principal = Principal(
            account="_local",
            kind=AccountKind.OPERATOR,
            scopes=frozenset(SCOPES),
            key_id=None,
            source=LOCAL_SOURCE,
        )
        yield service, principal
    finally:
        await hsm.aclose()
        await engine.dispose()


def run_local(obj: Context, body: Callable[[Ownership, Principal], Awaitable[T]]) -> T:
    """Run a service call locally; a refusal prints like an API problem and exits with the same code."""
    from jsd.ownership import OwnershipError
    from jsd_cli.client import ApiProblem
    from jsd_cli.local import _run

    async def call() -> T:
        async with local_service(obj) as (service, principal):
            return await body(service, principal)

    try:
        return _run(call())
    except OwnershipError as exc:
        problem = ApiProblem(
            status=exc.status,
            problem=exc.problem,
            title=exc.title,
            detail=exc.detail,
            errors=[e.as_dict() for e in exc.errors],
        )
        raise output.fail(problem) from None


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
        from jsd.api import render

        async def body(service: Ownership, principal: Principal) -> dict[str, Any]:
            view, key = await service.accounts.create_account(principal, account_id, kind, name)
            return {"account": render.account(view), "api_key": render.new_api_key(key)}

        answer = run_local(obj, body)
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
    if obj.remote:
        answer = obj.run(lambda api: api.call("GET", "/accounts"))
    else:
        from jsd.api import render

        async def body(service: Ownership, principal: Principal) -> dict[str, Any]:
            return {"accounts": [render.account(a) for a in await service.accounts.list_accounts(principal)]}

        answer = run_local(obj, body)
    if as_json:
        output.print_json(answer)
    else:
        click.echo(output.table(answer["accounts"], ACCOUNT_COLUMNS))


@accounts.command("keys")
@click.argument("account_id")
@json_option
@pass_context
def account_keys(obj: Context, account_id: str, as_json: bool) -> None:
    """The API keys of an account (ids and scopes; secrets are never stored)."""
    if obj.remote:
        answer = obj.run(lambda api: api.call("GET", f"/accounts/{segment(account_id)}/keys"))
    else:
        from jsd.api import render

        async def body(service: Ownership, principal: Principal) -> dict[str, Any]:
            return {"keys": [render.api_key(k) for k in await service.accounts.list_api_keys(principal, account_id)]}

        answer = run_local(obj, body)
    if as_json:
        output.print_json(answer)
    else:
        click.echo(output.table(answer["keys"], KEY_COLUMNS))


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
    if obj.remote:
        path = f"/accounts/{segment(account_id)}/keys"
        answer = obj.run(lambda api: api.call("POST", path, body={"scopes": wanted} if wanted else {}))
    else:
        from jsd.api import render

        async def body(service: Ownership, principal: Principal) -> dict[str, Any]:
            return render.new_api_key(await service.accounts.create_api_key(principal, account_id, wanted))

        answer = run_local(obj, body)
    _show_new_key(answer, out, as_json, answer, f"new API key for {account_id}")


@accounts.command("revoke-key")
@click.argument("key_id")
@json_option
@pass_context
def account_revoke_key(obj: Context, key_id: str, as_json: bool) -> None:
    """Revoke an API key: from now on it fails like an unknown one."""
    if obj.remote:
        obj.run(lambda api: api.call("DELETE", f"/keys/{segment(key_id)}"))
    else:

        async def body(service: Ownership, principal: Principal) -> None:
            await service.accounts.revoke_api_key(principal, key_id)

        run_local(obj, body)
    if as_json:
        output.print_json({"key_id": key_id, "revoked": True})
    else:
        click.echo(f"API key {key_id} revoked")
