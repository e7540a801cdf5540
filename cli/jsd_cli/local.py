"""Operator commands that work on the local database and HSM: ``jsd hsm``, ``jsd ns``, ``jsd device``.

They need what the daemon needs (the configuration, the HSM PIN), so only the operator of the machine can
run them. Keys are read from files or standard input; generated secrets are printed once. ``jsd ns`` is
dual-mode: given an API key it calls a daemon's API instead (jsd_cli.remote).
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

    def settings(self) -> Settings:
        from jsd.config import ConfigError, load_settings
        from jsd.logs import setup_logging

        if self._settings is None:
            try:
                self._settings = load_settings(Path(self.config_path) if self.config_path else None)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
            setup_logging(self._settings.get("log", "format"), self._settings.get("log", "level"))
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
@click.pass_obj
def hsm_init(obj: Context) -> None:
    """Create the SoftHSM2 token (embedded default) and the storage KEK; idempotent."""

    async def body() -> None:
        from jsd.serve import prepare

        await prepare(obj.settings())

    _run(body())
    click.echo("HSM ready")


@hsm.command("import-kek")
@click.argument("label")
@click.option("--key-file", required=True, help="File holding the 16-byte KEK as hex ('-' = stdin).")
@click.pass_obj
def hsm_import_kek(obj: Context, label: str, key_file: str) -> None:
    """Import a KEK (NS KEK or ASTK) as a wrap-only token object under LABEL."""
    key = _read_secret_hex(key_file, "KEK")

    async def body() -> None:
        async with _open(obj.settings()) as (_, hsm):
            assert hsm is not None
            await hsm.import_kek(label, key)

    _run(body())
    click.echo(f"imported KEK {label}")


@hsm.command("import-lmk")
@click.option("--se-manuf-id", type=click.IntRange(0, 15), required=True, help="SE_MANUF_ID of the TKM info.")
@click.option("--se-prod-id", type=click.IntRange(0, 15), required=True, help="SE_PROD_ID of the TKM info.")
@click.option("--lmk-id", type=click.IntRange(0, 15), required=True, help="LMK_ID of the TKM info.")
@click.option("--key-file", required=True, help="File holding the 16-byte lot master key as hex ('-' = stdin).")
@click.pass_obj
def hsm_import_lmk(obj: Context, se_manuf_id: int, se_prod_id: int, lmk_id: int, key_file: str) -> None:
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
    click.echo(f"imported lot master key {label}")


# -- jsd ns ------------------------------------------------------------------------------------


@click.group()
def ns() -> None:
    """Network servers allowed to talk to this Join Server."""


@ns.command("add")
@click.argument("net_id")
@click.option("--name", default="", help="Display name.")
@click.option("--kek-label", help="KEK label the NS knows (default ns-<NetID>).")
@click.option("--kek-file", help="Import this KEK (16 bytes hex; '-' = stdin) under the label.")
@click.option("--generate-kek", is_flag=True, help="Generate the KEK in the HSM and print it once.")
@click.option("--token-file", help="Bearer token the NS sends, read from a file.")
@click.option("--generate-token", is_flag=True, help="Generate a bearer token and print it once.")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False), help="NS client certificate (PEM).")
@click.option("--answer-url", help="The NS's LBI listener, for asynchronous answers.")
@click.option("--async-answers", is_flag=True, help="Answer asynchronously (POST to --answer-url).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
        ns_add_remote(obj, new_ns, kek, generate_kek, token, generate_token, as_json)
        return

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
    data: dict[str, Any] = {"net_id": net.hex(), "kek_label": label}
    lines = [f"network server {net.hex()} added (KEK label {label})"]
    if generate_token and token:
        data["token"] = token
        lines.append(f"bearer token (shown once): {token}")
    if shown is not None:
        data["kek"] = shown.hex()
        lines.append(f"KEK (shown once, put it in the NS's [[keks]]): {shown.hex()}")
    _emit(as_json, data, "\n".join(lines))


@ns.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ns_list(obj: Context, as_json: bool) -> None:
    """List registered network servers."""
    if obj.remote:
        from jsd_cli.remote import ns_list_remote

        ns_list_remote(obj, as_json)
        return

    async def body() -> list[dict[str, Any]]:
        async with _open(obj.settings(), hsm_needed=False) as (registry, _):
            return [
                {
                    "net_id": n.net_id.hex(),
                    "name": n.name,
                    "kek_label": n.kek_label,
                    "auth": "token" if n.token_hash else "certificate",
                    "answer_url": n.answer_url,
                    "async": n.async_mode,
                }
                for n in await registry.list_network_servers()
            ]

    rows = _run(body())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['net_id']}  {row['kek_label']:<20} {row['auth']:<12} {row['name']}")


@ns.command("remove")
@click.argument("net_id")
@click.pass_obj
def ns_remove(obj: Context, net_id: str) -> None:
    """Remove a network server (its KEK stays in the HSM)."""
    net = _eui(net_id, "NetID", 3)
    if obj.remote:
        from jsd_cli.remote import ns_remove_remote

        ns_remove_remote(obj, net.hex())
        return

    async def body() -> None:
        async with _open(obj.settings(), hsm_needed=False) as (registry, _):
            await registry.remove_network_server(net)

    _run(body())
    click.echo(f"network server {net.hex()} removed")


# -- jsd device --------------------------------------------------------------------------------

MAC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")


@click.group()
def device() -> None:
    """Devices (operator import until the ownership workflow exists)."""


@device.command("add")
@click.argument("dev_eui")
@click.option("--join-eui", required=True)
@click.option("--mac-version", type=click.Choice(MAC_VERSIONS), required=True)
@click.option("--keys-file", required=True, help='JSON {"AppKey": hex, "NwkKey": hex (1.1)}; "-" = stdin.')
@click.option("--home-net-id", help="NetID of the home network server.")
@click.option("--astk-label", help="Label of the application server transport key (ASTK).")
@click.option("--astk-file", help="Import this ASTK (16 bytes hex) under --astk-label if it is not there yet.")
@click.option("--hsm-group", help="HSM group (storage KEK); default join.default_hsm_group.")
@click.option("--name", help="Display name.")
@click.pass_obj
def device_add(
    obj: Context,
    dev_eui: str,
    join_eui: str,
    mac_version: str,
    keys_file: str,
    home_net_id: str | None,
    astk_label: str | None,
    astk_file: str | None,
    hsm_group: str | None,
    name: str | None,
) -> None:
    """Import a device with its root keys; the keys go straight into the HSM and are kept wrapped."""
    from jsd.registry import NewDevice

    dev = _eui(dev_eui, "DevEUI")
    join = _eui(join_eui, "JoinEUI")
    home = _eui(home_net_id, "home NetID", 3) if home_net_id else None
    raw = sys.stdin.read() if keys_file == "-" else Path(keys_file).read_text()
    try:
        keys = json.loads(raw)
        app_key = bytes.fromhex(keys["AppKey"])
        nwk_key = bytes.fromhex(keys["NwkKey"]) if keys.get("NwkKey") else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise click.BadParameter('keys file must be JSON {"AppKey": "<32 hex>", "NwkKey": "<32 hex>"}') from None
    if len(app_key) != 16 or (nwk_key is not None and len(nwk_key) != 16):
        raise click.BadParameter("AppKey and NwkKey must be 16 bytes (32 hex digits)")
    if (mac_version == "1.1") != (nwk_key is not None):
        raise click.BadParameter("LoRaWAN 1.1 devices need an NwkKey; 1.0.x devices must not have one")
    if astk_file and not astk_label:
        raise click.UsageError("--astk-file needs --astk-label")
    astk = _read_secret_hex(astk_file, "ASTK") if astk_file else None

    async def body() -> None:
        async with _open(obj.settings()) as (registry, hsm):
            assert hsm is not None
            group = hsm_group or obj.settings().get("join", "default_hsm_group")
            await hsm.ensure_storage_kek(group)
            if astk_label and not await hsm.has_kek(astk_label):
                if astk is None:
                    raise click.ClickException(f"ASTK {astk_label} is not in the HSM: give --astk-file")
                await hsm.import_kek(astk_label, astk)
            await registry.add_device(
                NewDevice(
                    dev_eui=dev,
                    join_eui=join,
                    mac_version=mac_version,
                    hsm_group=group,
                    app_key_blob=await hsm.import_root_key(group, app_key),
                    nwk_key_blob=await hsm.import_root_key(group, nwk_key) if nwk_key else None,
                    home_net_id=home,
                    astk_label=astk_label,
                    owner_account=None,
                    name=name,
                )
            )

    _run(body())
    click.echo(f"device {dev.hex()} added")


@device.command("show")
@click.argument("dev_eui")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def device_show(obj: Context, dev_eui: str, as_json: bool) -> None:
    """Show a device and its nonce state (never its keys)."""
    dev = _eui(dev_eui, "DevEUI")

    async def body() -> dict[str, Any]:
        async with _open(obj.settings(), hsm_needed=False) as (registry, _):
            found = await registry.get_device(dev)
            if found is None:
                raise click.ClickException(f"device {dev.hex()} not found")
            return {
                "dev_eui": found.dev_eui.hex(),
                "join_eui": found.join_eui.hex(),
                "mac_version": found.mac_version,
                "hsm_group": found.hsm_group,
                "home_net_id": found.home_net_id.hex() if found.home_net_id else None,
                "astk_label": found.astk_label,
                "join_nonce": found.nonces.join_nonce,
                "last_dev_nonce": found.nonces.last_dev_nonce,
                "used_dev_nonces": len(found.nonces.used_dev_nonces),
            }

    data = _run(body())
    _emit(as_json, data, "\n".join(f"{k}: {v}" for k, v in data.items()))


@device.command("reset-nonces")
@click.argument("dev_eui")
@click.pass_obj
def device_reset_nonces(obj: Context, dev_eui: str) -> None:
    """Forget the DevNonces and RJcounts seen (e.g. after a device reset); JoinNonce keeps counting."""
    dev = _eui(dev_eui, "DevEUI")

    async def body() -> None:
        async with _open(obj.settings(), hsm_needed=False) as (registry, _):
            await registry.reset_dev_nonces(dev)

    _run(body())
    click.echo(f"DevNonce state of {dev.hex()} reset")


