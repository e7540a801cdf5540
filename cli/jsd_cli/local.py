"""Operator commands that work on the local database and HSM: ``jsd hsm``, ``jsd ns``, and the local half
of ``jsd devices add|show|reset-nonces`` (jsd_cli.devices).

They need what the daemon needs (the configuration, the HSM PIN), so only the operator of the machine can
run them. Keys are read from files or standard input; generated secrets are printed once or written to new
0600 files. ``jsd ns`` is dual-mode: given an API key it calls a daemon's API instead (jsd_cli.remote).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from jsd.config import Settings
    from jsd.hsm import Hsm
    from jsd.registry import Registry

T = TypeVar("T")


class Context:
    """Lazily loaded settings for the commands of one invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self.serving = False

    def settings(self) -> Settings:
        import logging

        from jsd.config import ConfigError, load_settings
        from jsd.logs import setup_logging

        if self._settings is None:
            try:
                self._settings = load_settings(Path(self.config_path) if self.config_path else None)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            level = str(self._settings.get("log", "level"))
            if self.serving or level.lower() == "debug":
                setup_logging(self._settings.get("log", "format"), level)
            else:  # a command's stderr is for its own messages: log lines only on trouble, and the first start
                setup_logging(self._settings.get("log", "format"), "warning")
                logging.getLogger("jsd.serve").setLevel(logging.INFO)  # "created SoftHSM2 token ..." once
        return self._settings

    @property
    def remote(self) -> bool:
        """Whether dual-mode commands (``ns``, ``account``) call a daemon's API instead (see remote.Context)."""
        return False


def _run(coro: Awaitable[T]) -> T:
    """Run a command body; domain errors become a readable message and exit code 1."""
    from jsd.hsm import HsmError
    from jsd.registry import RegistryError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (HsmError, RegistryError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@asynccontextmanager
async def _open(settings: Settings, hsm_needed: bool = True) -> AsyncIterator[tuple[Registry, Hsm | None]]:
    from jsd.app import hsm_settings
    from jsd.config import database_url
    from jsd.hsm import Hsm
    from jsd.registry import Registry, create_engine
    from jsd.serve import prepare

    await prepare(settings)
    engine = create_engine(database_url(settings))
    hsm = await Hsm.open(hsm_settings(settings)) if hsm_needed else None
    try:
        yield Registry(engine), hsm
    finally:
        if hsm is not None:
            await hsm.aclose()
        await engine.dispose()


def _read_secret_hex(source: str, what: str, length: int = 16) -> bytes:
    """A key given as hex in a file (or '-' for standard input)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    try:
        value = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise click.BadParameter(f"{what} is not hex") from None
    if len(value) != length:
        raise click.BadParameter(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return value


def _eui(value: str, what: str, length: int = 8) -> bytes:
    try:
        data = bytes.fromhex(value.removeprefix("0x").replace("-", "").replace(":", ""))
    except ValueError:
        raise click.BadParameter(f"{what} is not hex") from None
    if len(data) != length:
        raise click.BadParameter(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return data


def _cert_fingerprint(cert_file: str) -> str:
    """SHA-256 of a PEM certificate's DER form: how an NS's TLS client certificate is recognised."""
    import ssl

    der = ssl.PEM_cert_to_DER_cert(Path(cert_file).read_text())
    return hashlib.sha256(der).hexdigest()


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2) if as_json else text)


# -- jsd hsm -----------------------------------------------------------------------------------


@click.group()
def hsm() -> None:
    """Prepare the HSM and import KEKs."""


@hsm.command("init")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_obj
def hsm_init(obj: Context, as_json: bool) -> None:
    """Create the SoftHSM2 token (embedded default) and the storage KEK; idempotent."""

    async def body() -> None:
        from jsd.serve import prepare

        await prepare(obj.settings())

    _run(body())
    _emit(as_json, {"ready": True}, "HSM ready")


@hsm.command("import-kek")
@click.argument("label")
@click.option("--key-file", required=True, help="File holding the 16-byte KEK as hex ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_obj
def hsm_import_kek(obj: Context, label: str, key_file: str, as_json: bool) -> None:
    """Import a KEK (NS KEK or ASTK) as a wrap-only token object under LABEL."""
    key = _read_secret_hex(key_file, "KEK")

    async def body() -> None:
        async with _open(obj.settings()) as (_, hsm):
            assert hsm is not None
            await hsm.import_kek(label, key)

    _run(body())
    _emit(as_json, {"label": label}, f"imported KEK {label}")


@hsm.command("import-lmk")
@click.option("--se-manuf-id", type=click.IntRange(0, 15), required=True, help="SE_MANUF_ID of the TKM info.")
@click.option("--se-prod-id", type=click.IntRange(0, 15), required=True, help="SE_PROD_ID of the TKM info.")
@click.option("--lmk-id", type=click.IntRange(0, 15), required=True, help="LMK_ID of the TKM info.")
@click.option("--key-file", required=True, help="File holding the 16-byte lot master key as hex ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_obj
def hsm_import_lmk(obj: Context, se_manuf_id: int, se_prod_id: int, lmk_id: int, key_file: str, as_json: bool) -> None:
    """Import a secure-element lot master key (DERIVE only, never readable again).

    Devices imported with TKM info naming these ids get their root keys derived from it inside the HSM.
    """
    from jsd.ownership.se import TkmInfo, lot_master_key_label

    key = _read_secret_hex(key_file, "lot master key")
    label = lot_master_key_label(TkmInfo(se_manuf_id, se_prod_id, lmk_id, 0, bytes(8)))

    async def body() -> None:
        async with _open(obj.settings()) as (_, hsm):
            assert hsm is not None
            await hsm.import_lot_master_key(label, key)

    _run(body())
    _emit(as_json, {"label": label}, f"imported lot master key {label}")


# -- jsd ns ------------------------------------------------------------------------------------


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
@click.pass_obj
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
    from jsd.registry import NetworkServer

    net = _eui(net_id, "NetID", 3)
    label = kek_label or f"ns-{net.hex()}"
    if kek_file and generate_kek:
        raise click.UsageError("use --kek-file or --generate-kek, not both")
    if async_answers and not answer_url:
        raise click.UsageError("--async-answers needs --answer-url")
    targets = _ns_secret_files(out_dir, net.hex(), generate_kek, generate_token)
    token = None
    if token_file:
        token = Path(token_file).read_text().strip()
    elif generate_token and not obj.remote:
        token = secrets.token_urlsafe(32)
    fingerprint = _cert_fingerprint(cert_file) if cert_file else None
    if token is None and fingerprint is None and not generate_token:
        raise click.UsageError("give a credential: --token-file, --generate-token or --cert-file")
    kek = _read_secret_hex(kek_file, "KEK") if kek_file else None
    if obj.remote:
        from jsd_cli.remote import ns_add_remote

        new_ns: dict[str, Any] = {"net_id": net.hex(), "name": name, "kek_label": label, "cert_fingerprint": fingerprint}
        new_ns |= {"answer_url": answer_url, "async_mode": async_answers}
        answer = ns_add_remote(obj, new_ns, kek, generate_kek, token, generate_token)
    else:

        async def body() -> bytes | None:
            async with _open(obj.settings()) as (registry, hsm):
                assert hsm is not None
                new_kek = await hsm.generate_random(16) if generate_kek else kek
                if new_kek is not None:
                    await hsm.import_kek(label, new_kek)
                elif not await hsm.has_kek(label):
                    raise click.ClickException(f"KEK {label} is not in the HSM: give --kek-file or --generate-kek")
                await registry.add_network_server(
                    NetworkServer(
                        net_id=net,
                        name=name,
                        kek_label=label,
                        token_hash=hashlib.sha256(token.encode()).hexdigest() if token else None,
                        cert_fingerprint=fingerprint,
                        answer_url=answer_url,
                        async_mode=async_answers,
                    )
                )
                return new_kek if generate_kek else None

        shown = _run(body())
        server = {
            "net_id": net.hex(),
            "name": name,
            "kek_label": label,
            "has_token": token is not None,
            "cert_fingerprint": fingerprint,
            "answer_url": answer_url,
            "async_mode": async_answers,
        }
        answer = {"network_server": server}
        if generate_token and token:
            answer["token"] = token
        if shown is not None:
            answer["kek"] = shown.hex()
    _ns_added(answer, targets, as_json)


def _ns_secret_files(out_dir: Path | None, net_id: str, kek: bool, token: bool) -> dict[str, Path]:
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


def _ns_added(answer: dict[str, Any], targets: dict[str, Path], as_json: bool) -> None:
    """Hand out the generated secrets (files or output, once) and say what was registered."""
    import os

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
@click.pass_obj
def ns_list(obj: Context, as_json: bool) -> None:
    """List registered network servers."""
    if obj.remote:
        from jsd_cli.remote import ns_list_remote

        answer = ns_list_remote(obj)
    else:

        async def body() -> list[dict[str, Any]]:
            async with _open(obj.settings(), hsm_needed=False) as (registry, _):
                return [
                    {
                        "net_id": n.net_id.hex(),
                        "name": n.name,
                        "kek_label": n.kek_label,
                        "has_token": n.token_hash is not None,
                        "cert_fingerprint": n.cert_fingerprint,
                        "answer_url": n.answer_url,
                        "async_mode": n.async_mode,
                    }
                    for n in await registry.list_network_servers()
                ]

        answer = {"network_servers": _run(body())}
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    from jsd_cli import output

    rows = [{**row, "auth": "token" if row.get("has_token") else "certificate"} for row in answer["network_servers"]]
    click.echo(output.table(rows, (("NET_ID", "net_id"), ("KEK_LABEL", "kek_label"), ("AUTH", "auth"), ("NAME", "name"))))


@ns.command("remove")
@click.argument("net_id")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_obj
def ns_remove(obj: Context, net_id: str, as_json: bool) -> None:
    """Remove a network server (its KEK stays in the HSM)."""
    net = _eui(net_id, "NetID", 3)
    if obj.remote:
        from jsd_cli.remote import ns_remove_remote

        ns_remove_remote(obj, net.hex())
    else:

        async def body() -> None:
            async with _open(obj.settings(), hsm_needed=False) as (registry, _):
                await registry.remove_network_server(net)

        _run(body())
    if as_json:
        click.echo(json.dumps({"net_id": net.hex(), "removed": True}, indent=2))
    else:
        click.echo(f"network server {net.hex()} removed")
