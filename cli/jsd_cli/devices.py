"""``jsd devices``: pre-commissioned and claimed devices through the REST API of a (remote) daemon.

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
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from jsd_cli import output
from jsd_cli.client import ApiClient, ApiProblem, ApiUnreachable
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


@click.group()
def devices() -> None:
    """Devices: import (manufacturer), list, show, NetID and ASTK, release (owner)."""


def show_device(as_json: bool, device: dict[str, Any]) -> None:
    if as_json:
        output.print_json(device)
    else:
        click.echo(output.fields(device, [k for k in DEVICE_FIELDS if k in device]))


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
@click.argument("source")
@click.option("--out", help="Write the answer (owner token, generated keys) to this new 0600 file.")
@json_option
@pass_context
def devices_add(obj: Context, source: str, out: str | None, as_json: bool) -> None:
    """Pre-commission one device from a JSON file (DeviceImport of docs/api.md; '-' = stdin)."""
    try:
        fields = json.loads(read_secret(source, "device JSON"))
    except ValueError as exc:
        raise click.UsageError(f"{source}: not JSON: {exc}") from None
    check_new_file(out)
    answer = obj.run(lambda api: api.call("POST", "/devices", body=fields))
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


@devices.command("show")
@click.argument("dev_eui")
@json_option
@pass_context
def devices_show(obj: Context, dev_eui: str, as_json: bool) -> None:
    """One device (never its keys)."""
    show_device(as_json, obj.run(lambda api: api.call("GET", f"/devices/{segment(dev_eui)}")))


def _value_or_clear(value: str | None, clear: bool, what: str) -> str | None:
    if (value is None) == (not clear):
        raise click.UsageError(f"give {what} or --clear")
    return value


@devices.command("set-netid")
@click.argument("dev_eui")
@click.argument("net_id", required=False)
@click.option("--clear", is_flag=True, help="No home network: no NS may join the device.")
@json_option
@pass_context
def devices_set_netid(obj: Context, dev_eui: str, net_id: str | None, clear: bool, as_json: bool) -> None:
    """Set the home NetID of a claimed device (which network server may join it)."""
    value = _value_or_clear(net_id, clear, "NET_ID")
    path = f"/devices/{segment(dev_eui)}/net-id"
    show_device(as_json, obj.run(lambda api: api.call("PUT", path, body={"net_id": value})))


@devices.command("set-astk")
@click.argument("dev_eui")
@click.argument("astk", required=False)
@click.option("--clear", is_flag=True, help="No ASTK: the AppSKey is not sent with JoinAns.")
@json_option
@pass_context
def devices_set_astk(obj: Context, dev_eui: str, astk: str | None, clear: bool, as_json: bool) -> None:
    """Choose the application server transport key (by name) the device's AppSKey is wrapped with."""
    value = _value_or_clear(astk, clear, "ASTK")
    path = f"/devices/{segment(dev_eui)}/astk"
    show_device(as_json, obj.run(lambda api: api.call("PUT", path, body={"astk": value})))


@devices.command("release")
@click.argument("dev_eui")
@click.option("--out", help="Write the new owner token to this new 0600 file instead of printing it.")
@json_option
@pass_context
def devices_release(obj: Context, dev_eui: str, out: str | None, as_json: bool) -> None:
    """Give a device up; it gets a fresh owner token (shown once) for its next owner."""
    _new_token(obj, f"/devices/{segment(dev_eui)}/release", out, as_json, "released")


def _new_token(obj: Context, path: str, out: str | None, as_json: bool, done: str) -> None:
    """POST an action that answers a device and a new owner token: the token to --out or shown once."""
    check_new_file(out)
    answer = obj.run(lambda api: api.call("POST", path))
    if as_json:
        if out is not None:
            emit_secret(out, answer["owner_token"], "new owner token", note_to_stderr=True)
            answer["owner_token"] = None
        output.print_json(answer)
        return
    click.echo(f"device {answer['device']['dev_eui']} {done}")
    emit_secret(out, answer["owner_token"], "new owner token")


@devices.command("reissue-token")
@click.argument("dev_eui")
@click.option("--out", help="Write the new owner token to this new 0600 file instead of printing it.")
@json_option
@pass_context
def devices_reissue_token(obj: Context, dev_eui: str, out: str | None, as_json: bool) -> None:
    """Replace the owner token of an unclaimed device (lost label or import answer); the old one dies."""
    _new_token(obj, f"/devices/{segment(dev_eui)}/owner-token", out, as_json, "has a new owner token")


@devices.command("reset-nonces")
@click.argument("dev_eui")
@json_option
@pass_context
def devices_reset_nonces(obj: Context, dev_eui: str, as_json: bool) -> None:
    """Forget the DevNonces seen (after a device reset); the JoinNonce keeps counting."""
    device = obj.run(lambda api: api.call("POST", f"/devices/{segment(dev_eui)}/reset-nonces"))
    if as_json:
        output.print_json(device)
    else:
        click.echo(f"DevNonce state of {device['dev_eui']} reset")


@devices.command("delete")
@click.argument("dev_eui")
@pass_context
def devices_delete(obj: Context, dev_eui: str) -> None:
    """Delete an unclaimed device (manufacturer) or any device (operator)."""
    obj.run(lambda api: api.call("DELETE", f"/devices/{segment(dev_eui)}"))
    click.echo(f"device {dev_eui} deleted")
