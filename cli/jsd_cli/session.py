"""``jsd login`` and ``jsd whoami``: remember which daemon and API key to use, and say who that is.

The profile (``JSD_PROFILE``, else ``$XDG_CONFIG_HOME/jsd/profile.toml``) holds the daemon's URL and the
*path* of the API key file, never the key, so the key stays in the one 0600 file it was written to. Options
and JSD_* variables still win over it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from jsd_cli import output
from jsd_cli.output import json_option
from jsd_cli.remote import Context, pass_context, profile_path, read_secret


def _me(obj: Context) -> dict[str, Any]:
    answer: dict[str, Any] = obj.run(lambda api: api.call("GET", "/me"))
    return answer


def _describe(me: dict[str, Any]) -> str:
    return f"{me['account']} ({me['kind']}), key {me['key_id']}, scopes: {' '.join(me['scopes'])}"


@click.command("login")
@click.option("--url", help="The daemon's API base URL (default: as the other commands find it).")
@click.option(
    "--api-key-file", required=True, type=click.Path(exists=True, dir_okay=False), help="File with the API key."
)
@json_option
@pass_context
def login(obj: Context, url: str | None, api_key_file: str, as_json: bool) -> None:
    """Check an API key against the daemon and keep its URL and key file in the profile for later commands."""
    key_file = Path(api_key_file).resolve()
    session = Context(obj.config_path, url or obj.base_url(), str(key_file))
    read_secret(str(key_file), "API key")
    me = _me(session)
    path = profile_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # TOML basic strings accept JSON's string escapes for these values (a URL and a path)
    text = f"url = {json.dumps(session.base_url())}\napi_key_file = {json.dumps(str(key_file))}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if as_json:
        output.print_json({"profile": str(path), "url": session.base_url(), "api_key_file": str(key_file), "me": me})
        return
    click.echo(f"logged in to {session.base_url()} as {_describe(me)}")
    click.echo(f"profile: {path}")


@click.command("whoami")
@json_option
@pass_context
def whoami(obj: Context, as_json: bool) -> None:
    """The account, key and scopes of the API key in use."""
    me = _me(obj)
    if as_json:
        output.print_json(me | {"url": obj.base_url()})
    else:
        click.echo(f"{_describe(me)} at {obj.base_url()}")
