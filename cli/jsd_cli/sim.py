"""``jsd sim``: simulated LoRaWAN devices and a home network server, for testers.

Talks Backend Interfaces 1.0 to any Join Server (ours or another) the way ChirpStack v4 does, and checks
every answer with device-side crypto that shares no code with the daemon. Secrets come from files or the
environment, never from the command line. The simulator is imported inside each command.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from jsd_sim.device import SimDevice
    from jsd_sim.network_server import SimNetworkServer

F = TypeVar("F", bound=Callable[..., Any])

MAC_CHOICES = ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.1", "1.1.0"]


def _read_secret(path: str | None, env: str, what: str) -> str | None:
    if path is not None:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read the {what} file: {exc}") from None
    return os.environ.get(env)


def _hex_key(text: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise click.UsageError(f"{what} is not hex") from None
    if len(key) != 16:
        raise click.UsageError(f"{what} must be 16 bytes (32 hex characters)")
    return key


def network_options(func: F) -> F:
    """The options every command needs to play one network server against one Join Server."""
    options = [
        click.option("--js-url", required=True, envvar="JSD_SIM_JS_URL",
                     help="LBI endpoint of the Join Server, e.g. http://127.0.0.1:8003/lbi [JSD_SIM_JS_URL]."),
        click.option("--net-id", required=True, envvar="JSD_SIM_NET_ID",
                     help="NetID of the simulated network server, 6 hex, sent as SenderID [JSD_SIM_NET_ID]."),
        click.option("--token-file", type=click.Path(dir_okay=False, exists=True),
                     help="File with the bearer token (else JSD_SIM_TOKEN; none: no Authorization header)."),
        click.option("--kek-label", envvar="JSD_SIM_KEK_LABEL",
                     help="Label of the NS KEK the Join Server wraps network keys with [JSD_SIM_KEK_LABEL]."),
        click.option("--kek-file", type=click.Path(dir_okay=False, exists=True),
                     help="File with the NS KEK as 32 hex (else JSD_SIM_KEK)."),
        click.option("--astk", "astks", multiple=True, metavar="KEK_LABEL=FILE",
                     help="An ASTK the simulated AS holds (hex in FILE) under its KEK label (`jsd astks list` shows "
                          "it), to check AppSKeys; repeatable."),
        click.option("--answer-port", type=click.IntRange(0, 65535),
                     help="Asynchronous mode: listen for answers on http://127.0.0.1:PORT/ (register that as the "
                          "NS's answer URL; 0 picks a free port, printed on stderr)."),
        click.option("--timeout", type=float, default=5.0, show_default=True,
                     help="HTTP timeout per request, seconds (ChirpStack: 5)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def device_options(func: F) -> F:
    """Where the devices come from, and where their nonce state is kept between runs."""
    options = [
        click.option("--csv", "csv_path", required=True, type=click.Path(dir_okay=False, exists=True),
                     help="Devices: header dev_eui,join_eui,mac_version,app_key,nwk_key (extra columns ignored)."),
        click.option("--limit", type=click.IntRange(min=1), help="Use only the first N devices."),
        click.option("--state", "state_path", type=click.Path(dir_okay=False),
                     help="JSON file with the devices' DevNonce state, read before and written after the run, "
                          "so reruns do not replay DevNonces."),
        click.option("--dev-nonce-start", type=click.IntRange(0, 0xFFFF),
                     help="First DevNonce of counter devices (1.0.4, 1.1) without saved state."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _network_server(o: dict[str, Any], *, connection_limit: int = 100) -> SimNetworkServer:
    from jsd_sim.network_server import SimNetworkServer

    token = _read_secret(o["token_file"], "JSD_SIM_TOKEN", "token")
    kek_text = _read_secret(o["kek_file"], "JSD_SIM_KEK", "KEK")
    if kek_text is not None and not o["kek_label"]:
        raise click.UsageError("a KEK needs --kek-label")
    astks = {}
    for item in o["astks"]:
        label, sep, path = item.partition("=")
        if not sep:
            raise click.UsageError("--astk takes LABEL=FILE")
        astks[label] = _hex_key(_read_secret(path, "", f"ASTK {label}") or "", f"ASTK {label}")
    try:
        return SimNetworkServer(
            o["js_url"], o["net_id"], token=token, kek_label=o["kek_label"],
            kek=_hex_key(kek_text, "KEK") if kek_text is not None else None, astks=astks,
            answer_port=o["answer_port"], http_timeout=o["timeout"],
            connection_limit=connection_limit,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _devices(o: dict[str, Any]) -> list[SimDevice]:
    from jsd_sim.scenarios import ScenarioError, load_devices_csv, load_state

    try:
        devices = load_devices_csv(o["csv_path"])
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    if o["limit"]:
        devices = devices[: o["limit"]]
    if o["dev_nonce_start"] is not None:
        for d in devices:
            d.next_dev_nonce = o["dev_nonce_start"]
    if o["state_path"]:
        load_state(o["state_path"], devices)
    return devices


def _save_state(o: dict[str, Any], devices: list[SimDevice]) -> None:
    from jsd_sim.scenarios import save_state

    if o["state_path"]:
        save_state(o["state_path"], devices)


def _async_command(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        return asyncio.run(func(**kwargs))

    return wrapper


@click.group()
def sim() -> None:
    """Simulated LoRaWAN devices (1.0.2–1.1) and a home network server speaking LBI 1.0.

    Every Success is checked as a device and a network would: the device opens and verifies the
    join-accept, and the network's unwrapped session keys must equal the device's. Exit status 1 means
    the Join Server deviated from what was expected.
    """


@sim.command()
@network_options
@device_options
@click.option("--mac-version", type=click.Choice(MAC_CHOICES),
              help="MACVersion the NS claims (e.g. 1.0.3 for a 1.1 device on a 1.0 NS); default: the device's.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device on stdout.")
@_async_command
async def join(mac_version: str | None, as_json: bool, **o: Any) -> None:
    """Join every device once (JoinReq) and check device and network agree on every session key."""
    from jsd_sim.network_server import JoinServerDeviation, SimError

    devices = _devices(o)
    failed = 0
    async with _network_server(o) as ns:
        if ns.answer_url:
            click.echo(f"asynchronous answers on {ns.answer_url}", err=True)
        for dev in devices:
            row: dict[str, Any] = {"dev_eui": dev.dev_eui.hex(), "mac_version": dev.mac_version}
            try:
                out = await ns.join(dev, mac_version=mac_version)
                row.update(result=out.result_code, latency_ms=round(out.latency_s * 1000, 3))
                if out.answer.description:
                    row["description"] = out.answer.description
                if out.device_session is not None:
                    s = out.device_session
                    row.update(dev_addr=s.dev_addr.hex(), join_nonce=s.join_nonce, opt_neg=s.opt_neg,
                               keys="agree", app_s_key="checked" if out.app_s_key_checked else (
                                   f"wrapped under {out.app_s_key_envelope.kek_label!r}, not checked (give "
                                   f"--astk {out.app_s_key_envelope.kek_label}=FILE)"
                                   if out.app_s_key_envelope else "absent"),
                               session_key_id=out.session_key_id)
                failed += not out.ok
            except JoinServerDeviation as exc:
                failed += 1
                row.update(result=exc.answer.result_code if exc.answer else "-", deviation=str(exc))
            except SimError as exc:
                failed += 1
                row.update(result="-", error=str(exc))
            if as_json:
                click.echo(json.dumps(row))
            else:
                extra = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("dev_eui", "mac_version", "result"))
                click.echo(f"{row['dev_eui']} {row['mac_version']:<5} {row['result']:<20} {extra}")
    _save_state(o, devices)
    if failed:
        click.echo(f"{failed} of {len(devices)} joins failed", err=True)
        sys.exit(1)


@sim.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True), required=False)
@click.option("--js-url", envvar="JSD_SIM_JS_URL", help="Override js_url of the file [JSD_SIM_JS_URL].")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="JSON file with the devices' DevNonce state, read before and written after the run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--example", is_flag=True, help="Print a commented example scenario file and exit.")
@_async_command
async def scenario(file: str | None, js_url: str | None, state_path: str | None, as_json: bool,
                   example: bool) -> None:
    """Run the steps of a scenario TOML FILE; each step states the Result it expects.

    Step kinds: join, replay (JoinReqFailed), wrong_key (MICFailed), wrong_net_id (UnknownSender, or
    ActivationDisallowed with ns = a registered non-home NS), rejoin (type = 0/1/2), home_ns (HNetID must be
    the home NetID), app_s_key (by the SessionKeyID of the last join). See --example.
    """
    from jsd_sim.scenarios import (
        EXAMPLE_TOML,
        ScenarioError,
        load_scenario,
        load_state,
        run_scenario,
        save_state,
    )

    if example:
        click.echo(EXAMPLE_TOML, nl=False)
        return
    if file is None:
        raise click.UsageError("give a scenario FILE (or --example)")
    try:
        sc = load_scenario(file, js_url=js_url)
    except ScenarioError as exc:
        raise click.UsageError(str(exc)) from None
    if state_path:
        load_state(state_path, sc.devices)
    report = await run_scenario(sc)
    if state_path:
        save_state(state_path, sc.devices)
    click.echo(json.dumps(report.to_json(), indent=1) if as_json else report.to_text())
    if not report.ok:
        sys.exit(1)


@sim.command()
@network_options
@device_options
@click.option("--mode", type=click.Choice(["open", "closed"]), default="closed", show_default=True,
              help="open: fixed arrival rate; closed: fixed number of joins in flight.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Open loop: joins per second.")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Closed loop: joins in flight.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Stop sending after this many seconds.")
@click.option("--total", type=click.IntRange(min=1), help="Stop after this many joins.")
@click.option("--mac-version", type=click.Choice(MAC_CHOICES), help="MACVersion the NS claims.")
@click.option("--no-verify", is_flag=True,
              help="Only read the Result (for a dummy server such as bench/http_ceiling.py).")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the report as JSON here.")
@click.option("--png", type=click.Path(dir_okay=False),
              help="Latency histogram as PNG (only if matplotlib is installed; it is not a dependency).")
@click.option("--quiet", is_flag=True, help="No live progress line on stderr.")
@_async_command
async def load(mode: str, rate: float, concurrency: int, duration: float, total: int | None,
               mac_version: str | None, no_verify: bool, json_out: str | None, png: str | None, quiet: bool,
               **o: Any) -> None:
    """Joins across many devices at a fixed rate or concurrency; report joins/s, latency, errors by Result."""
    from jsd_sim.load import LoadConfig, run_load, write_histogram_png

    if png and importlib.util.find_spec("matplotlib") is None:
        raise click.UsageError("--png needs matplotlib, which is not installed")
    devices = _devices(o)
    config = LoadConfig(mode=mode, rate=rate, concurrency=concurrency, duration=duration, total=total,
                        verify=not no_verify, mac_version=mac_version)
    async with _network_server(o, connection_limit=max(concurrency, 100)) as ns:
        if ns.answer_url:
            click.echo(f"asynchronous answers on {ns.answer_url}", err=True)
        report = await run_load(ns, devices, config, progress=None if quiet else sys.stderr)
    _save_state(o, devices)
    click.echo(report.to_text())
    if json_out:
        await asyncio.to_thread(Path(json_out).write_text, json.dumps(report.to_json(), indent=1) + "\n")
    if png:
        write_histogram_png(report, png)
