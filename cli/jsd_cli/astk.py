"""``jsd astks``: application server transport keys, by name, for the AppSKeys of one's devices.

A generated ASTK leaves the HSM exactly once, for the application server; ``create`` does that export right
away (printed or written to a new 0600 file) unless ``--no-export`` defers it to ``export``.

The Join Server wraps AppSKeys under the ASTK's HSM label (``kek_label``, ``astk-`` and 16 hex, unique across
accounts), and that label, not the name, is what the application server receives with each envelope
(``KEKLabel``; ChirpStack's ``joinServerContext.appSKey.kekLabel``). So ``create`` and ``list`` show it, and
``create`` prints the ``appserver.toml`` line that maps it to the key file.
"""

from __future__ import annotations

from typing import Any

import click

from jsd_cli import output
from jsd_cli.client import ApiClient
from jsd_cli.output import json_option
from jsd_cli.remote import Context, check_new_file, emit_secret, pass_context, read_secret, segment, show_list

ASTK_COLUMNS = (
    ("NAME", "name"),
    ("KEK LABEL", "kek_label"),
    ("ORIGIN", "origin"),
    ("EXPORTED", "exported"),
    ("CREATED", "created_at"),
)


def appserver_line(kek_label: str, key_file: str) -> str:
    """The ``[astks]`` entry of ``jsd chirpstack appserver``'s TOML for this ASTK."""
    return f'{kek_label} = "{key_file}"'



@click.group()
def astks() -> None:
    """Application server transport keys (ASTKs)."""


@astks.command("create")
@click.argument("name")
@click.option("--key-file", help="Import this key (32 hex; '-' = stdin) instead of generating one in the HSM.")
@click.option("--out", help="Write the generated key to this new 0600 file instead of printing it ('-' = stdout, "
              "the key alone; the messages go to stderr).")
@click.option("--no-export", is_flag=True, help="Generate only; export later with `jsd astks export`.")
@json_option
@pass_context
def astk_create(obj: Context, name: str, key_file: str | None, out: str | None, no_export: bool, as_json: bool) -> None:
    """Create the ASTK NAME: imported from --key-file, or generated (and exported once)."""
    if key_file is not None and (out is not None or no_export):
        raise click.UsageError("--out and --no-export are for generated keys, not with --key-file")
    if as_json and out == "-":
        raise click.UsageError("--json prints to stdout: give --out FILE")
    key = read_secret(key_file, "ASTK") if key_file is not None else None
    check_new_file(out)

    async def body(api: ApiClient) -> tuple[dict[str, Any], str | None]:
        created = await api.call("POST", "/astks", body={"name": name} | ({"key": key} if key else {}))
        if key is not None or no_export:
            return created, None
        exported = await api.call("POST", f"/astks/{segment(name)}/export")
        return {**created, "exported": True}, str(exported["key"])

    created, generated = obj.run(body)
    if as_json:
        if generated is not None and out is not None:
            emit_secret(out, generated, f"ASTK {name}", note_to_stderr=True)
            generated = None
        output.print_json(created | ({"key": generated} if generated else {}))
        return
    label = str(created["kek_label"])
    to_stderr = out == "-"
    headline = f"ASTK {created['name']} {'imported' if key else 'generated in the HSM'}; KEK label {label}"
    click.echo(headline, err=to_stderr)
    if generated is not None:
        emit_secret(out, generated, f"ASTK {name}")
    key_file = out if out not in (None, "-") else (key_file if key_file not in (None, "-") else "FILE-WITH-THE-KEY")
    line = appserver_line(label, str(key_file))
    click.echo(f"application server (appserver.toml [astks]): {line}", err=to_stderr)


@astks.command("export")
@click.argument("name")
@click.option("--out", required=True, help="New file (mode 0600) for the key; '-' = stdout.")
@json_option
@pass_context
def astk_export(obj: Context, name: str, out: str, as_json: bool) -> None:
    """Export a generated ASTK, once, for the application server."""
    if as_json and out == "-":
        raise click.UsageError("--json prints to stdout: give --out FILE")
    check_new_file(out)
    answer = obj.run(lambda api: api.call("POST", f"/astks/{segment(name)}/export"))
    emit_secret(out, str(answer["key"]), f"ASTK {name}", note_to_stderr=as_json)
    if as_json:
        output.print_json({"name": answer.get("name", name), "out": out})


@astks.command("list")
@json_option
@pass_context
def astk_list(obj: Context, as_json: bool) -> None:
    """ASTKs of this account (names and state, never keys)."""
    show_list(obj, "/astks", "astks", ASTK_COLUMNS, as_json)
