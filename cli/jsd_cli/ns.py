"""``jsd ns``: the network servers allowed to talk to this Join Server, through the daemon's API (operator).

A KEK asked to be generated is made here (OS CSPRNG) and sent like a given one, so the operator gets it once;
generated secrets are printed once or written to new 0600 files under ``--out``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import click

from jsd_cli import output
from jsd_cli.inputs import cert_fingerprint, eui, read_secret_hex
from jsd_cli.remote import Context, pass_context, segment

NS_COLUMNS = (("NET_ID", "net_id"), ("KEK_LABEL", "kek_label"), ("AUTH", "auth"), ("NAME", "name"))


@click.group()
def ns() -> None:
    """Network servers allowed to talk to this Join Server."""


@ns.command("add")
@click.argument("net_id")
@click.option("--name", default="", help="Display name.")
@click.option("--kek-label", help="KEK label the NS knows (default ns-<NetID>).")
@click.option("--kek-file", help="Import this KEK (16 bytes hex; '-' = stdin) under the label.")
@click.option("--generate-kek", is_flag=True, help="Generate the KEK and hand it out once (printed, or --out).")
@click.option("--token-file", help="Bearer token the NS sends, read from a file.")
@click.option("--generate-token", is_flag=True, help="Generate a bearer token and hand it out once (printed, or --out).")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False), help="NS client certificate (PEM).")
@click.option("--answer-url", help="The NS's LBI listener, for asynchronous answers.")
@click.option("--async-answers", is_flag=True, help="Answer asynchronously (POST to --answer-url).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the generated KEK and token to OUT/ns-<NetID>.kek and OUT/ns-<NetID>.token (new files, mode "
    "0600; the directory is made if missing) instead of printing them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (the API's shape).")
@pass_context
def ns_add(
    obj: Context,
    net_id: str,
    name: str,
    kek_label: str | None,
    kek_file: str | None,
    generate_kek: bool,
    token_file: str | None,
    generate_token: bool,
    cert_file: str | None,
    answer_url: str | None,
    async_answers: bool,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Register a network server by NET_ID, with its KEK and credential."""
    net = eui(net_id, "NetID", 3)
    if kek_file and generate_kek:
        raise click.UsageError("use --kek-file or --generate-kek, not both")
    if async_answers and not answer_url:
        raise click.UsageError("--async-answers needs --answer-url")
    targets = _secret_files(out_dir, net.hex(), generate_kek, generate_token)
    token = Path(token_file).read_text().strip() if token_file else None
    fingerprint = cert_fingerprint(cert_file) if cert_file else None
    if token is None and fingerprint is None and not generate_token:
        raise click.UsageError("give a credential: --token-file, --generate-token or --cert-file")
    kek = secrets.token_bytes(16) if generate_kek else read_secret_hex(kek_file, "KEK") if kek_file else None
    payload: dict[str, Any] = {"net_id": net.hex(), "name": name, "kek_label": kek_label or f"ns-{net.hex()}"}
    payload |= {"async_mode": async_answers}
    payload |= {k: v for k, v in (("cert_fingerprint", fingerprint), ("answer_url", answer_url)) if v is not None}
    if kek is not None:
        payload["kek"] = kek.hex()
    if token is not None:
        payload["token"] = token
    elif generate_token:
        payload["generate_token"] = True
    answer: dict[str, Any] = obj.run(lambda api: api.call("POST", "/network-servers", body=payload))
    if generate_kek and kek is not None:
        answer["kek"] = kek.hex()
    _added(answer, targets, as_json)


def _secret_files(out_dir: Path | None, net_id: str, kek: bool, token: bool) -> dict[str, Path]:
    """The files --out will get, checked before anything is done, so a one-time secret cannot be lost."""
    if out_dir is None:
        return {}
    if not kek and not token:
        raise click.UsageError("--out is for generated secrets: give --generate-kek and/or --generate-token")
    targets = {k: out_dir / f"ns-{net_id}.{k}" for k, wanted in (("kek", kek), ("token", token)) if wanted}
    for path in targets.values():
        if path.exists():
            raise click.UsageError(f"{path} exists and may hold an earlier secret: choose another --out")
    return targets


def _added(answer: dict[str, Any], targets: dict[str, Path], as_json: bool) -> None:
    """Hand out the generated secrets (files or output, once) and say what was registered."""
    server = answer["network_server"]
    written = []
    for what, path in targets.items():
        if answer.get(what):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(answer[what] + "\n")
            answer[what] = None
            answer[f"{what}_file"] = str(path)
            written.append(f"{'KEK' if what == 'kek' else 'bearer token'} written to {path} (mode 0600)")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(f"network server {server['net_id']} added (KEK label {server['kek_label']})")
    for line in written:
        click.echo(line)
    if answer.get("token"):
        click.echo(f"bearer token (shown once): {answer['token']}")
    if answer.get("kek"):
        click.echo(f"KEK (shown once, put it in the NS's [[keks]]): {answer['kek']}")


@ns.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (the API's shape).")
@pass_context
def ns_list(obj: Context, as_json: bool) -> None:
    """List registered network servers."""
    answer = obj.run(lambda api: api.call("GET", "/network-servers"))
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [{**row, "auth": "token" if row.get("has_token") else "certificate"} for row in answer["network_servers"]]
    click.echo(output.table(rows, NS_COLUMNS))


@ns.command("remove")
@click.argument("net_id")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@pass_context
def ns_remove(obj: Context, net_id: str, as_json: bool) -> None:
    """Remove a network server (its KEK stays in the HSM)."""
    net = eui(net_id, "NetID", 3).hex()
    obj.run(lambda api: api.call("DELETE", f"/network-servers/{segment(net)}"))
    if as_json:
        click.echo(json.dumps({"net_id": net, "removed": True}, indent=2))
    else:
        click.echo(f"network server {net} removed")
