"""``jsd users``: people who sign in to the web console (/ui/), on the local database as the operator.

Console users are not in the REST API: like the first ``jsd accounts create``, these run on the daemon's
machine with its configuration (jsd_cli.bootstrap). The password is read from a prompt (asked twice) or from
standard input, never from the command line, and only its argon2 hash is stored.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from jsd_cli import output
from jsd_cli.bootstrap import run_console
from jsd_cli.output import json_option
from jsd_cli.remote import Context, pass_context

if TYPE_CHECKING:
    from jsd.ownership import Principal
    from jsd.ui.auth import ConsoleAuth

USER_COLUMNS = (("USERNAME", "username"), ("ACCOUNT", "account"), ("KIND", "kind"), ("CREATED", "created_at"))


def _password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


def _user(record: Any) -> dict[str, Any]:
    from jsd.ownership.model import wire_time

    return {
        "username": record.username,
        "account": record.account,
        "kind": record.account_kind,
        "created_at": wire_time(record.created_at),
    }


@click.group()
def users() -> None:
    """Web console users (local operator; sign in at /ui/)."""


@users.command("create")
@click.argument("account")
@click.argument("username")
@json_option
@pass_context
def users_create(obj: Context, account: str, username: str, as_json: bool) -> None:
    """Create USERNAME in ACCOUNT; the password is prompted for (or read from standard input)."""
    password = _password()

    async def body(auth: ConsoleAuth, principal: Principal) -> dict[str, Any]:
        return _user(await auth.create_user(principal, account, username, password))

    user = run_console(obj, body)
    if as_json:
        output.print_json({"user": user})
    else:
        click.echo(f"user {user['username']} created in account {user['account']} ({user['kind']})")


@users.command("list")
@click.option("--account", help="Only the users of this account.")
@json_option
@pass_context
def users_list(obj: Context, account: str | None, as_json: bool) -> None:
    """Console users, by account."""

    async def body(auth: ConsoleAuth, principal: Principal) -> list[dict[str, Any]]:
        return [_user(u) for u in await auth.list_users(principal, account)]

    found = run_console(obj, body)
    if as_json:
        output.print_json({"users": found})
    else:
        click.echo(output.table(found, USER_COLUMNS))


@users.command("delete")
@click.argument("username")
@pass_context
def users_delete(obj: Context, username: str) -> None:
    """Delete a console user and end its sessions."""

    async def body(auth: ConsoleAuth, principal: Principal) -> None:
        await auth.delete_user(principal, username)

    run_console(obj, body)
    click.echo(f"user {username} deleted")
