"""``jsd devices``: pre-commissioned and claimed devices through the REST API of a daemon, and, on the
daemon's machine, the operator's shortcut: ``add`` with ``--home-net-id``/``--astk-label`` puts a device whose
keys are at hand straight into the local database and HSM (jsd_cli.bootstrap), owned by no account, with its
home NetID and ASTK label; the API has no such call (an owner sets those after the claim).

``import`` streams the file: it is read in blocks while it is sent, and the answer (one line per device, with
the owner tokens and generated keys that exist nowhere else) is written to a 0600 file as it arrives, so
100,000 devices never sit in memory on either side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from jsd_cli import bootstrap, output
from jsd_cli.client import ApiClient, ApiProblem, ApiUnreachable
from jsd_cli.inputs import eui, read_secret_hex
from jsd_cli.output import DEVICE_COLUMNS, json_option
from jsd_cli.progress import Progress
from jsd_cli.remote import Context, check_new_file, emit_secret, pass_context, read_secret, secret_file, segment

BLOCK = 64 * 1024
POLL = 1.0  # seconds between two questions about a running import's progress
CONTENT_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DEVICE_FIELDS = (
    "dev_eui",
    "join_eui",
    "mac_version",
    "name",
    "admin_info",
    "secure_element",
    "profile_id",
    "serial",
    "state",
    "manufacturer",
    "owner",
    "home_net_id",
    "astk",
    "keys_exported",
    "created_at",
    "claimed_at",
)


MAC_VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1")


@click.group()
def devices() -> None:
    """Devices: import and add (manufacturer, operator), list, show, NetID and ASTK, release (owner)."""


def show_device(as_json: bool, device: dict[str, Any]) -> None:
    """A Device: its fields, and any warnings of the answer on stderr (under --json: in the JSON)."""
    if as_json:
        output.print_json(device)
        return
    for warning in device.get("warnings") or ():
        output.warn(str(warning))
    extra = [k for k in device if k not in DEVICE_FIELDS and k != "warnings"]
    click.echo(output.fields(device, [k for k in (*DEVICE_FIELDS, *extra) if k in device]))


@dataclass
class ImportResult:
    """What the answer said: counts per status, tokens received, the closing summary (None if cut off)."""

    statuses: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    summary: dict[str, Any] | None = None


def count_rows(source: Path, fmt: str) -> int:
    """Device rows in the file (lines, less a CSV header), for the progress line; read in blocks."""
    lines, last = 0, b"\n"
    with source.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"
    return max(0, lines - (fmt == "csv"))


async def _blocks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """The file in 64 KiB blocks, read off the event loop."""
    while chunk := await asyncio.to_thread(handle.read, BLOCK):
        yield chunk


async def _follow(api: ApiClient, import_id: str, progress: Progress) -> None:
    """Show the rows the daemon has checked and staged (keys in the HSM), asked once a second.

    Bytes sent say little: kernel buffers swallow megabytes before the daemon reads them.
    """
    storing = False
    while True:
        await asyncio.sleep(POLL)
        try:
            staged = (await api.call("GET", f"/devices/import/{import_id}"))["staged"]
        except ApiProblem as problem:
            if problem.status != 404:  # 404: nothing staged yet, or the import is being committed
                return
            continue
        except ApiUnreachable:
            return
        if storing:
            continue
        if staged >= progress.done:
            progress.update(staged)
        if progress.total and staged >= progress.total:
            storing = True
            progress.note(f"all {staged:,} devices checked; storing them in one transaction")


async def upload(
    api: ApiClient, handle: IO[bytes], progress: Progress, content_type: str, out: str
) -> ImportResult:
    """Stream the file; ``out`` is created only once the daemon accepted the import (a refusal writes nothing)."""
    result = ImportResult()
    import_id = secrets.token_hex(16)
    follower = asyncio.create_task(_follow(api, import_id, progress))
    try:
        async with api.stream("POST", "/devices/import", _blocks(handle), content_type, import_id) as lines:
            follower.cancel()
            with secret_file(out) as sink:
                async for line in lines:
                    if not line.strip():
                        continue
                    sink.write(line if line.endswith(b"\n") else line + b"\n")
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        raise ApiUnreachable(f"the answer has a line that is not JSON: {line[:80]!r}") from None
                    if isinstance(entry, dict) and "summary" in entry and "dev_eui" not in entry:
                        result.summary = entry["summary"]
                    elif isinstance(entry, dict):
                        result.statuses[str(entry.get("status"))] += 1
                        result.tokens += entry.get("owner_token") is not None
                        progress.done = max(progress.done, sum(result.statuses.values()))
                sink.flush()
    finally:
        follower.cancel()
    return result


def _free_name(target: Path) -> Iterator[Path]:
    """``target``, then ``name.1.suffix``, ``name.2.suffix``, ...: where a new answer may go."""
    yield target
    stem, suffix = (target.name[: -len(target.suffix)], target.suffix) if target.suffix else (target.name, "")
    for number in itertools.count(1):
        yield target.with_name(f"{stem}.{number}{suffix}")


def keep_answer(partial: Path, target: Path) -> Path:
    """Give the answer file its name without ever replacing a file (earlier tokens may be in it)."""
    for name in _free_name(target):
        try:
            os.link(partial, name)
        except FileExistsError:
            continue
        partial.unlink()
        return name
    raise AssertionError("unreachable")


@devices.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(sorted(CONTENT_TYPES)), help="Default: from the file name.")
@click.option(
    "--out",
    help="Where the answer lines go (owner tokens, generated keys; mode 0600, '-' = stdout). "
    "Default SOURCE.tokens.jsonl; never overwritten: a taken name gets .1, .2, ... before its suffix, "
    "and an answer without new owner tokens (a re-run) is not written at all.",
)
@json_option
@pass_context
def devices_import(obj: Context, source: Path, fmt: str | None, out: str | None, as_json: bool) -> None:
    """Pre-commission the devices of a CSV or JSON Lines file: all or nothing, idempotent on re-run."""
    if fmt is None:
        fmt = SUFFIXES.get(source.suffix.lower())
        if fmt is None:
            raise click.UsageError(f"cannot tell the format of {source.name}: give --format csv or --format jsonl")
    target = out or f"{source}.tokens.jsonl"
    if target != "-" and not Path(target).parent.resolve().is_dir():
        raise click.UsageError(f"the directory of {target} does not exist")
    partial = target if target == "-" else str(Path(target).with_name(f".{Path(target).name}.{os.getpid()}.partial"))
    progress = Progress(f"importing {source.name}", count_rows(source, fmt))
    try:
        with source.open("rb") as handle:

            async def body(api: ApiClient) -> ImportResult:
                return await upload(api, handle, progress, CONTENT_TYPES[fmt], partial)

            result = obj.run(body, timeout=None)
    except BaseException:
        if partial != "-" and Path(partial).exists():
            if _has_tokens(Path(partial)):
                kept = keep_answer(Path(partial), Path(target))
                click.echo(f"error: the import was cut off; owner tokens already received are in {kept}: keep it",
                           err=True)  # fmt: skip
            else:
                Path(partial).unlink()
        raise
    written: Path | None = None
    if partial != "-":
        if result.tokens:
            written = keep_answer(Path(partial), Path(target))
        else:
            Path(partial).unlink()
    progress.finish()
    if result.summary is None:
        where = f" were written to {written}: keep that file" if written else ""
        click.echo(
            f"error: the answer ended before its summary; {sum(result.statuses.values())} device lines "
            f"({result.tokens} owner tokens){where}",
            err=True,
        )
        raise click.exceptions.Exit(output.EXIT_OTHER)
    if as_json:
        output.print_json({"summary": result.summary, "out": str(written) if written else None})
        return
    created, unchanged = result.summary.get("created", 0), result.summary.get("unchanged", 0)
    message = f"imported {source.name}: {created} created, {unchanged} unchanged"
    if written is not None:
        message += f"; {result.tokens} owner tokens in {written} (mode 0600)"
    elif target != "-":
        message += "; no new owner tokens, no answer file written"
    click.echo(message, err=target == "-")


def _has_tokens(path: Path) -> bool:
    with path.open("rb") as handle:
        return any(b'"owner_token"' in line for line in handle)


@devices.command("add")
@click.argument("dev_eui", required=False)
@click.option("--join-eui", help="JoinEUI (default: ownership.default_join_eui of the daemon).")
@click.option("--mac-version", type=click.Choice(MAC_VERSIONS), help="LoRaWAN version of the device.")
@click.option("--keys-file", help='Root keys, JSON {"AppKey": hex, "NwkKey": hex (1.1)}; "-" = stdin.')
@click.option("--generate-keys", is_flag=True, help="Generate the root keys in the HSM (handed out once).")
@click.option("--name", help="Display name.")
@click.option("--home-net-id", help="Local only: NetID of the home network server (an owner sets it otherwise).")
@click.option("--astk-label", help="Local only: HSM label of the application server transport key (ASTK).")
@click.option("--astk-file", help="Local only: import this ASTK (32 hex) under --astk-label if it is not there.")
@click.option("--hsm-group", help="HSM group (storage KEK); default join.default_hsm_group.")
@click.option("--from-file", "from_file", help="The whole device as JSON (DeviceImport of docs/api.md; '-' = stdin).")
@click.option("--out", help="Write the answer (owner token, generated keys) to this new 0600 file.")
@json_option
@pass_context
def devices_add(
    obj: Context,
    dev_eui: str | None,
    join_eui: str | None,
    mac_version: str | None,
    keys_file: str | None,
    generate_keys: bool,
    name: str | None,
    home_net_id: str | None,
    astk_label: str | None,
    astk_file: str | None,
    hsm_group: str | None,
    from_file: str | None,
    out: str | None,
    as_json: bool,
) -> None:
    """Pre-commission one device: DEV_EUI with options, or --from-file.

    Through the API it gets an owner token (shown once, or in --out) for its owner to claim it. On the
    daemon's machine (no API key, or --local) the operator's shortcut also sets its home NetID and ASTK
    label for a device that no account owns; the keys go straight into the HSM and are kept wrapped.
    """
    local_only = {"--home-net-id": home_net_id, "--astk-label": astk_label, "--astk-file": astk_file}
    if from_file is not None:
        given = [
            o
            for o, v in {
                "DEV_EUI": dev_eui,
                "--join-eui": join_eui,
                "--mac-version": mac_version,
                "--keys-file": keys_file,
                "--name": name,
                **local_only,
            }.items()
            if v
        ]
        if given or generate_keys:
            raise click.UsageError(
                f"--from-file holds the whole device: leave out {', '.join(given) or '--generate-keys'}"
            )
        try:
            fields = json.loads(read_secret(from_file, "device JSON"))
        except ValueError as exc:
            raise click.UsageError(f"{from_file}: not JSON: {exc}") from None
    else:
        if dev_eui is None or mac_version is None:
            raise click.UsageError("give DEV_EUI and --mac-version (or --from-file)")
        if (keys_file is None) == (not generate_keys):
            raise click.UsageError("give --keys-file or --generate-keys")
        dev_eui = eui(dev_eui, "DevEUI").hex()  # refused here before any key is read
        join_eui = None if join_eui is None else eui(join_eui, "JoinEUI").hex()
        fields = {"dev_eui": dev_eui, "mac_version": mac_version}
        fields |= {k: v for k, v in (("join_eui", join_eui), ("name", name), ("hsm_group", hsm_group)) if v}
        if keys_file is not None:
            fields |= _root_keys(keys_file, mac_version)
        else:
            fields["generate_keys"] = True
    check_new_file(out)
    if obj.remote and any(local_only.values()):
        used = [o for o, v in local_only.items() if v]
        raise click.UsageError(
            f"{', '.join(used)}: only on the daemon's machine (--local, or no API key); through the API a "
            "device's home NetID and ASTK are set by its owner after the claim"
        )
    if any(local_only.values()):
        if generate_keys or from_file is not None:
            raise click.UsageError("--home-net-id and --astk-label go with --keys-file")
        _add_local_owned_by_nobody(obj, fields, home_net_id, astk_label, astk_file)
        answer = {**fields, "status": "created"}
        answer.pop("app_key", None), answer.pop("nwk_key", None)
    else:
        answer = obj.run(lambda api: api.call("POST", "/devices", body=fields))
    _show_added(answer, out, as_json)


def _root_keys(keys_file: str, mac_version: str) -> dict[str, str]:
    """``app_key``/``nwk_key`` from the keys file (JSON with AppKey and, for 1.1, NwkKey)."""
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
    return {"app_key": app_key.hex()} | ({"nwk_key": nwk_key.hex()} if nwk_key else {})


def _add_local_owned_by_nobody(
    obj: Context, fields: dict[str, Any], home_net_id: str | None, astk_label: str | None, astk_file: str | None
) -> None:
    """The operator's shortcut (jsd_cli.bootstrap), its inputs checked here before the HSM is opened."""
    dev = eui(fields["dev_eui"], "DevEUI")
    join_eui = fields.get("join_eui") or obj.settings().get("ownership", "default_join_eui")
    if not join_eui:
        raise click.UsageError("give --join-eui (ownership.default_join_eui is not set)")
    join = eui(join_eui, "JoinEUI")
    home = eui(home_net_id, "home NetID", 3) if home_net_id else None
    if astk_file and not astk_label:
        raise click.UsageError("--astk-file needs --astk-label")
    astk = read_secret_hex(astk_file, "ASTK") if astk_file else None
    fields["dev_eui"], fields["join_eui"] = dev.hex(), join.hex()
    bootstrap.add_unowned_device(obj, fields, home, astk_label, astk)


def _show_added(answer: dict[str, Any], out: str | None, as_json: bool) -> None:
    secret_keys = ("owner_token", "app_key", "nwk_key")
    if as_json:
        if out is not None:
            emit_secret(out, json.dumps(answer), "import answer", note_to_stderr=True)
            answer = {k: v for k, v in answer.items() if k not in secret_keys}
        output.print_json(answer)
        return
    click.echo(f"device {answer['dev_eui']} {answer.get('status', 'created')}")
    if out is not None:
        emit_secret(out, json.dumps(answer), "import answer")
        return
    for key in secret_keys:
        if answer.get(key):
            emit_secret(None, answer[key], key)


@devices.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Devices per page.")
@click.option("--after", help="Start after this DevEUI (the 'next' of the previous page).")
@click.option("--all", "all_pages", is_flag=True, help="Follow 'next' to the end.")
@json_option
@pass_context
def devices_list(obj: Context, limit: int, after: str | None, all_pages: bool, as_json: bool) -> None:
    """Devices this account can see."""

    async def body(api: ApiClient) -> dict[str, Any]:
        found: list[dict[str, Any]] = []
        cursor = after
        while True:
            params = {"limit": str(limit)} | ({"after": cursor} if cursor else {})
            page = await api.call("GET", "/devices", params=params)
            found.extend(page["devices"])
            cursor = page.get("next")
            if not all_pages or not cursor:
                return {"devices": found, "next": cursor}

    answer = obj.run(body)
    if as_json:
        output.print_json(answer)
        return
    click.echo(output.table(answer["devices"], DEVICE_COLUMNS))
    if answer["next"]:
        click.echo(f"more: --after {answer['next']} (or --all)", err=True)


def _device_path(dev_eui: str) -> str:
    """The device's API path; a DevEUI that is not 8 bytes of hex is refused here, before any call."""
    return f"/devices/{eui(dev_eui, 'DevEUI').hex()}"


@devices.command("show")
@click.argument("dev_eui")
@json_option
@pass_context
def devices_show(obj: Context, dev_eui: str, as_json: bool) -> None:
    """One device (never its keys); with an admin key also its nonce state (last JoinNonce, last DevNonce, how
    many DevNonces are remembered), for diagnosing refused joins."""
    path = _device_path(dev_eui)

    async def body(api: ApiClient) -> dict[str, Any]:
        shown: dict[str, Any] = await api.call("GET", path)
        try:
            book = await api.call("GET", f"{path}/nonces")
        except ApiProblem as exc:
            if exc.status != 403:
                raise
        else:
            shown.update({k: book[k] for k in ("join_nonce", "last_dev_nonce", "used_dev_nonces")})
        return shown

    show_device(as_json, obj.run(body))


def _setting_command(name: str, setting: str, metavar: str, clear_help: str, doc: str) -> click.Command:
    """``devices set-netid|set-astk``: PUT one setting of a device (a value, or null with --clear)."""

    @devices.command(name, help=doc)
    @click.argument("dev_eui")
    @click.argument("value", metavar=f"[{metavar}]", required=False)
    @click.option("--clear", is_flag=True, help=clear_help)
    @json_option
    @pass_context
    def command(obj: Context, dev_eui: str, value: str | None, clear: bool, as_json: bool) -> None:
        if (value is None) == (not clear):
            raise click.UsageError(f"give {metavar} or --clear")
        path, body = f"/devices/{segment(dev_eui)}/{setting}", {setting.replace("-", "_"): value}
        show_device(as_json, obj.run(lambda api: api.call("PUT", path, body=body)))

    return command


devices_set_netid = _setting_command(
    "set-netid", "net-id", "NET_ID", "No home network: no NS may join the device.",
    "Set the home NetID of a claimed device (which network server may join it).",
)  # fmt: skip
devices_set_astk = _setting_command(
    "set-astk", "astk", "ASTK", "No ASTK: the AppSKey is not sent with JoinAns.",
    "Choose the application server transport key (by name) the device's AppSKey is wrapped with.",
)  # fmt: skip


def _token_command(name: str, action: str, done: str, doc: str) -> click.Command:
    """``devices release|reissue-token``: POST an action that answers the device and a new owner token, which
    goes to --out or is shown once."""

    @devices.command(name, help=doc)
    @click.argument("dev_eui")
    @click.option("--out", help="Write the new owner token to this new 0600 file instead of printing it.")
    @json_option
    @pass_context
    def command(obj: Context, dev_eui: str, out: str | None, as_json: bool) -> None:
        check_new_file(out)
        path = f"/devices/{segment(dev_eui)}/{action}"
        answer = obj.run(lambda api: api.call("POST", path))
        if as_json:
            if out is not None:
                emit_secret(out, answer["owner_token"], "new owner token", note_to_stderr=True)
                answer["owner_token"] = None
            output.print_json(answer)
            return
        click.echo(f"device {answer['device']['dev_eui']} {done}")
        emit_secret(out, answer["owner_token"], "new owner token")

    return command


devices_release = _token_command(
    "release", "release", "released", "Give a device up; it gets a fresh owner token (shown once) for its next owner."
)
devices_reissue_token = _token_command(
    "reissue-token", "owner-token", "has a new owner token",
    "Replace the owner token of an unclaimed device (lost label or import answer); the old one dies.",
)  # fmt: skip


@devices.command("reset-nonces")
@click.argument("dev_eui")
@json_option
@pass_context
def devices_reset_nonces(obj: Context, dev_eui: str, as_json: bool) -> None:
    """Forget the DevNonces seen (after a device reset); the JoinNonce keeps counting."""
    path = f"{_device_path(dev_eui)}/reset-nonces"
    device = obj.run(lambda api: api.call("POST", path))
    if as_json:
        output.print_json(device)
    else:
        click.echo(f"DevNonce state of {device['dev_eui']} reset")


@devices.command("delete")
@click.argument("dev_eui")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def devices_delete(obj: Context, dev_eui: str, yes: bool, as_json: bool) -> None:
    """Delete an unclaimed device (manufacturer) or any device (operator): its keys are gone for good."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"deleting {dev_eui} cannot be undone: give --yes to confirm")
        click.confirm(f"Delete device {dev_eui} and its keys for good?", abort=True, err=True)
    path = _device_path(dev_eui)
    obj.run(lambda api: api.call("DELETE", path))
    if as_json:
        output.print_json({"dev_eui": dev_eui.lower(), "deleted": True})
    else:
        click.echo(f"device {dev_eui} deleted")
