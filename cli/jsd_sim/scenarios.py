"""Scenarios: steps run against a Join Server, each stating the Result it expects.

A scenario comes from a small TOML file, from command-line options, or is built in code after provisioning a
Join Server under test (``provision``). Each step runs for every selected device, in order; a step fails when
the Join Server answers another Result than expected, or when a Success is not usable (a deviation found by
:class:`~jsd_sim.network_server.SimNetworkServer`). The run fails when any step fails.

Step kinds (default expectation in brackets):

- ``join`` [Success]: a JoinRequest with the next DevNonce; ``mac_version`` sets the NS's view (a 1.1 device on
  a 1.0 NS: "1.0.3").
- ``replay`` [JoinReqFailed]: the last DevNonce again.
- ``wrong_key`` [MICFailed]: a JoinRequest MIC'ed with a wrong root key. The DevNonce is only reserved, so the
  next ``join`` reuses it and shows that the rejected request left no state behind.
- ``wrong_net_id`` [UnknownSender with ``net_id`` (the home token, another SenderID); ActivationDisallowed
  with ``ns`` naming a registered network that is not the device's home].
- ``rejoin`` [Success]: Rejoin-request ``type`` 0, 1 or 2 (LoRaWAN 1.1 devices only).
- ``home_ns`` [Success]: HomeNSReq from network ``ns``; HNetID must be the home NetID.
- ``app_s_key`` [Success]: AppSKeyReq with the SessionKeyID of the device's last join; the AppSKey must equal
  the device's when the simulator holds the ASTK.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jsd_sim.device import MAC_VERSIONS, SimDevice, is_lorawan_11, normalize_mac_version
from jsd_sim.example import EXAMPLE_TOML
from jsd_sim.network_server import (
    JoinOutcome,
    JoinServerDeviation,
    SimError,
    SimNetworkServer,
    same_result,
)

__all__ = [
    "DEFAULT_EXPECT",
    "EXAMPLE_TOML",
    "JoinServerUnderTest",
    "NetworkServerSpec",
    "Scenario",
    "ScenarioError",
    "ScenarioReport",
    "Step",
    "StepResult",
    "load_devices_csv",
    "load_scenario",
    "load_state",
    "provision",
    "run_scenario",
    "save_state",
    "standard_steps",
]

STEP_KINDS = ("join", "replay", "wrong_key", "wrong_net_id", "rejoin", "home_ns", "app_s_key")
DEFAULT_EXPECT: Mapping[str, tuple[str, ...]] = {
    "join": ("Success",),
    "replay": ("JoinReqFailed",),
    "wrong_key": ("MICFailed",),
    "rejoin": ("Success",),
    "home_ns": ("Success",),
    "app_s_key": ("Success",),
}


class ScenarioError(ValueError):
    """The scenario file or options are wrong (not a Join Server failure)."""


@dataclass(frozen=True)
class NetworkServerSpec:
    """A network server the simulator plays: NetID, bearer token, KEK, async answers or not."""

    name: str
    net_id: str
    token: str | None = None
    kek_label: str | None = None
    kek: bytes | None = field(default=None, repr=False)
    async_answers: bool = False


@dataclass(frozen=True)
class Step:
    """One scenario step; ``expect`` lists the acceptable Result codes."""

    kind: str
    expect: tuple[str, ...] = ()
    ns: str | None = None
    versions: tuple[str, ...] | None = None
    rejoin_type: int | None = None
    mac_version: str | None = None
    net_id: str | None = None

    def expected(self, home: str) -> tuple[str, ...]:
        """The explicit expectation, or the kind's default."""
        if self.expect:
            return self.expect
        if self.kind == "wrong_net_id":
            return ("ActivationDisallowed",) if self.ns not in (None, home) else ("UnknownSender",)
        return DEFAULT_EXPECT[self.kind]

    def label(self) -> str:
        """A short name for reports."""
        options = {"type": self.rejoin_type, "ns": self.ns, "mac": self.mac_version, "net_id": self.net_id}
        extra = [f"{name}={value}" for name, value in options.items() if value not in (None, "")]
        return self.kind + (f"({', '.join(extra)})" if extra else "")


@dataclass
class Scenario:
    """What to run: the Join Server, the networks, the ASTKs the simulated AS holds, devices and steps."""

    js_url: str
    network_servers: dict[str, NetworkServerSpec]
    devices: list[SimDevice]
    steps: list[Step]
    home: str = "home"
    astks: dict[str, bytes] = field(default_factory=dict, repr=False)
    name: str = "scenario"
    concurrency: int = 8


@dataclass(frozen=True)
class StepResult:
    """One step for one device."""

    step: int
    kind: str
    dev_eui: str
    expected: tuple[str, ...]
    got: str
    ok: bool
    detail: str = ""
    latency_ms: float | None = None


@dataclass
class ScenarioReport:
    """All step results; ``ok`` is false as soon as the Join Server deviated once."""

    name: str
    results: list[StepResult]

    @property
    def ok(self) -> bool:
        """Every step for every device got what it expected."""
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[StepResult]:
        """The steps that deviated."""
        return [r for r in self.results if not r.ok]

    def to_text(self) -> str:
        """A summary line per step, then one line per failure."""
        lines = [f"scenario {self.name}: {'PASS' if self.ok else 'FAIL'}"]
        by_step: dict[tuple[int, str], list[StepResult]] = {}
        for r in self.results:
            by_step.setdefault((r.step, r.kind), []).append(r)
        for (i, kind), rs in sorted(by_step.items()):
            good = sum(r.ok for r in rs)
            lines.append(f"  step {i + 1:>2} {kind:<40} {good}/{len(rs)} as expected ({'|'.join(rs[0].expected)})")
        for r in self.failures:
            lines.append(
                f"  FAIL step {r.step + 1} {r.kind} {r.dev_eui}: expected {'|'.join(r.expected)}, got {r.got}"
                + (f" ({r.detail})" if r.detail else "")
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form of the report."""
        return {"name": self.name, "ok": self.ok, "results": [asdict(r) for r in self.results]}


# -- loading --------------------------------------------------------------------------------------------


def _hex_bytes(value: str, name: str, length: int | None = None) -> bytes:
    text = value.strip()
    text = text[2:] if text[:2].lower() == "0x" else text
    try:
        out = bytes.fromhex(text)
    except ValueError:
        raise ScenarioError(f"{name}: not hex: {value!r}") from None
    if length is not None and len(out) != length:
        raise ScenarioError(f"{name}: {len(out)} bytes, expected {length}")
    return out


def load_devices_csv(path: str | Path) -> list[SimDevice]:
    """Devices from a CSV with header ``dev_eui,join_eui,mac_version,app_key,nwk_key`` (extra columns ignored)."""
    devices = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"dev_eui", "join_eui", "mac_version", "app_key"} - set(reader.fieldnames or [])
        if missing:
            raise ScenarioError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            devices.append(_device(row, f"{path}:{line}"))
    return devices


def _device(row: Mapping[str, Any], where: str) -> SimDevice:
    """A device from a CSV row or a ``[[devices]]`` table: hex EUIs and keys; an empty ``nwk_key`` is none."""
    try:
        nwk = str(row.get("nwk_key") or "").strip()
        return SimDevice(
            _hex_bytes(row["dev_eui"], "dev_eui", 8),
            _hex_bytes(row["join_eui"], "join_eui", 8),
            normalize_mac_version(row["mac_version"]),
            _hex_bytes(row["app_key"], "app_key", 16),
            _hex_bytes(nwk, "nwk_key", 16) if nwk else None,
        )
    except KeyError as exc:
        raise ScenarioError(f"{where}: {exc.args[0]} is missing") from None
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _secret(table: Mapping[str, Any], key: str, where: str) -> str | None:
    """``key`` or ``key_env`` (the name of an environment variable), so files need not hold secrets."""
    if key in table:
        return str(table[key])
    env = table.get(f"{key}_env")
    if env is None:
        return None
    value = os.environ.get(str(env))
    if value is None:
        raise ScenarioError(f"{where}.{key}_env: environment variable {env} is not set")
    return value


def _step(raw: Mapping[str, Any], i: int) -> Step:
    where = f"steps[{i}]"
    allowed = {"kind", "expect", "ns", "versions", "type", "mac_version", "net_id"}
    unknown = set(raw) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = raw.get("kind")
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}.kind must be one of {', '.join(STEP_KINDS)}")
    expect = raw.get("expect", ())
    expect_t = (expect,) if isinstance(expect, str) else tuple(expect)
    rtype = raw.get("type")
    if kind == "rejoin" and rtype not in (0, 1, 2):
        raise ScenarioError(f"{where}: a rejoin step needs type = 0, 1 or 2")
    versions = raw.get("versions")
    try:
        vs = tuple(normalize_mac_version(v) for v in versions) if versions is not None else None
        mac = normalize_mac_version(raw["mac_version"]) if "mac_version" in raw else None
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None
    return Step(kind, expect_t, raw.get("ns"), vs, rtype, mac, raw.get("net_id"))


def load_scenario(path: str | Path, *, js_url: str | None = None) -> Scenario:
    """Read a scenario TOML file (see ``jsd sim scenario --help`` for the format); paths are file-relative."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{p}: {exc}") from None
    url = js_url or raw.get("js_url")
    if not url:
        raise ScenarioError(f"{p}: js_url is missing")
    nss = {}
    for name, t in (raw.get("network_servers") or {}).items():
        where = f"network_servers.{name}"
        if "net_id" not in t:
            raise ScenarioError(f"{where}.net_id is missing")
        _hex_bytes(t["net_id"], f"{where}.net_id", 3)
        kek = _secret(t, "kek", where)
        nss[name] = NetworkServerSpec(
            name=name,
            net_id=t["net_id"].lower(),
            token=_secret(t, "token", where),
            kek_label=t.get("kek_label"),
            kek=_hex_bytes(kek, f"{where}.kek", 16) if kek else None,
            async_answers=bool(t.get("async", False)),
        )
    home = raw.get("home", "home")
    if home not in nss:
        raise ScenarioError(f"{p}: home network server {home!r} is not under [network_servers]")
    astks = {label: _hex_bytes(v, f"astks.{label}", 16) for label, v in (raw.get("astks") or {}).items()}
    devices: list[SimDevice] = []
    if "devices_csv" in raw:
        devices += load_devices_csv(p.parent / raw["devices_csv"])
    devices += [_device(d, f"{p}: devices[{i}]") for i, d in enumerate(raw.get("devices") or [])]
    if not devices:
        raise ScenarioError(f"{p}: no devices (devices_csv or [[devices]])")
    steps = [_step(s, i) for i, s in enumerate(raw.get("steps") or [])]
    if not steps:
        raise ScenarioError(f"{p}: no [[steps]]")
    for s in steps:
        if s.ns is not None and s.ns not in nss:
            raise ScenarioError(f"{p}: step {s.label()} names unknown network server {s.ns!r}")
    return Scenario(url, nss, devices, steps, home, astks, raw.get("name", p.stem), int(raw.get("concurrency", 8)))


# -- running --------------------------------------------------------------------------------------------


@dataclass
class _DeviceRun:
    device: SimDevice
    last_join: JoinOutcome | None = None


def _selected(step: Step, device: SimDevice) -> bool:
    if step.versions is not None:
        return device.mac_version in step.versions
    if step.kind == "rejoin":
        return is_lorawan_11(device.mac_version)
    return True


def _wrong_key(key: bytes) -> bytes:
    return bytes([key[0] ^ 0xFF]) + key[1:]


async def _run_one(
    step: Step, i: int, run: _DeviceRun, nss: Mapping[str, SimNetworkServer], scenario: Scenario
) -> StepResult:
    dev = run.device
    expected = step.expected(scenario.home)
    home = nss[scenario.home]
    ns = nss[step.ns] if step.ns else home

    def result(got: str, ok: bool, detail: str = "", latency: float | None = None) -> StepResult:
        return StepResult(
            i,
            step.label(),
            dev.dev_eui.hex(),
            expected,
            got,
            ok,
            detail,
            None if latency is None else round(latency * 1000, 3),
        )

    try:
        if step.kind in ("join", "replay", "wrong_key", "wrong_net_id"):
            nonce: int | None = None
            root: bytes | None = None
            sender: str | None = None
            if step.kind == "replay":
                if dev.last_dev_nonce is None:
                    return result("-", False, "nothing to replay: no earlier join step for this device")
                nonce = dev.last_dev_nonce
            elif step.kind in ("wrong_key", "wrong_net_id"):
                nonce = dev.take_dev_nonce(commit=False)
                if step.kind == "wrong_key":
                    root = _wrong_key(dev.root_key)
                elif step.ns in (None, scenario.home):
                    sender = step.net_id or f"{int(home.net_id.hex(), 16) ^ 0x1:06x}"
            outcome = await ns.join(dev, mac_version=step.mac_version, dev_nonce=nonce, root_key=root, sender_id=sender)
            if outcome.ok:
                run.last_join = outcome
            ok = any(same_result(outcome.result_code, e) for e in expected)
            return result(outcome.result_code, ok, outcome.answer.description if not ok else "", outcome.latency_s)
        if step.kind == "rejoin":
            assert step.rejoin_type is not None
            outcome = await ns.rejoin(dev, step.rejoin_type)
            if outcome.ok:
                run.last_join = outcome
            ok = any(same_result(outcome.result_code, e) for e in expected)
            return result(outcome.result_code, ok, outcome.answer.description if not ok else "", outcome.latency_s)
        if step.kind == "home_ns":
            hns = await ns.home_ns(dev.dev_eui, dev.join_eui)
            ok = any(same_result(hns.result_code, e) for e in expected)
            detail = "" if ok else hns.answer.description
            if ok and hns.answer.ok and hns.h_net_id != home.net_id:
                ok, detail = False, f"HNetID {hns.h_net_id.hex() if hns.h_net_id else None} != {home.net_id.hex()}"
            return result(hns.result_code, ok, detail, hns.answer.latency_s)
        if step.kind == "app_s_key":
            last = run.last_join
            if last is None or last.session_key_id is None or last.device_session is None:
                return result("-", False, "no SessionKeyID: the last join returned none (or there was none)")
            ak = await ns.app_s_key(dev.dev_eui, dev.join_eui, last.session_key_id)
            ok = any(same_result(ak.result_code, e) for e in expected)
            detail = "" if ok else ak.answer.description
            if ok and ak.app_s_key is not None and ak.app_s_key != last.device_session.keys.app_s_key:
                ok, detail = False, "AppSKey from AppSKeyAns differs from the device's"
            elif ok and ak.answer.ok and ak.app_s_key is None:
                detail = f"AppSKey wrapped under {ak.envelope.kek_label if ak.envelope else '?'}: not compared"
            return result(ak.result_code, ok, detail, ak.answer.latency_s)
    except JoinServerDeviation as exc:
        got = exc.answer.result_code if exc.answer is not None else "-"
        return result(got, False, f"deviation: {exc}")
    except SimError as exc:
        return result("-", False, f"{type(exc).__name__}: {exc}")
    raise ScenarioError(f"unknown step kind {step.kind!r}")


async def run_scenario(
    scenario: Scenario,
    *,
    network_servers: Mapping[str, SimNetworkServer] | None = None,
    on_result: Callable[[StepResult], None] | None = None,
) -> ScenarioReport:
    """Run every step for every selected device; pass started ``network_servers`` to reuse them."""
    own: dict[str, SimNetworkServer] = {}
    nss: dict[str, SimNetworkServer] = dict(network_servers or {})
    for name, spec in scenario.network_servers.items():
        if name not in nss:
            own[name] = nss[name] = SimNetworkServer(
                scenario.js_url,
                spec.net_id,
                token=spec.token,
                kek_label=spec.kek_label,
                kek=spec.kek,
                astks=scenario.astks,
                answer_port=0 if spec.async_answers else None,
            )
    runs = [_DeviceRun(d) for d in scenario.devices]
    results: list[StepResult] = []
    sem = asyncio.Semaphore(max(1, scenario.concurrency))

    async def one(step: Step, i: int, run: _DeviceRun) -> StepResult:
        async with sem:
            r = await _run_one(step, i, run, nss, scenario)
        if on_result is not None:
            on_result(r)
        return r

    try:
        for ns in own.values():
            await ns.start()
        for i, step in enumerate(scenario.steps):
            chosen = [r for r in runs if _selected(step, r.device)]
            results += await asyncio.gather(*(one(step, i, r) for r in chosen))
    finally:
        for ns in own.values():
            await ns.close()
    return ScenarioReport(scenario.name, results)


# -- provisioning a Join Server under test --------------------------------------------------------------


class JoinServerUnderTest(Protocol):
    """What a test fixture offers to register networks and devices on a Join Server (ours or a fake)."""

    url: str

    async def add_network_server(
        self, net_id: str, kek: bytes, token: str, answer_url: str | None = None, **options: Any
    ) -> str: ...

    async def add_device(
        self,
        dev_eui: str,
        join_eui: str,
        mac_version: str,
        app_key: bytes,
        nwk_key: bytes | None,
        home_net_id: str | None,
        astk: bytes | None,
    ) -> str | None: ...


async def provision(
    target: JoinServerUnderTest,
    *,
    versions: Sequence[str] = MAC_VERSIONS,
    devices_per_version: int = 1,
    with_visited: bool = True,
    async_answers: bool = False,
    home_net_id: str | None = None,
) -> tuple[Scenario, dict[str, SimNetworkServer]]:
    """Register a home NS (and a visited one), random devices and ASTKs; return a step-less scenario.

    The returned network servers are started (their async answer URL was registered, with
    ``async_mode=True`` when ``async_answers``); the caller closes them. Fill ``scenario.steps`` and call :func:`run_scenario` with ``network_servers=``.
    """
    home_id = home_net_id or secrets.token_hex(3)
    visited_id = f"{int(home_id, 16) ^ 0x800001:06x}"
    specs = {"home": home_id, **({"visited": visited_id} if with_visited else {})}
    nss: dict[str, SimNetworkServer] = {}
    scenario = Scenario(target.url, {}, [], [], "home", {}, "provisioned")
    try:
        for name, net_id in specs.items():
            kek, token = secrets.token_bytes(16), secrets.token_urlsafe(24)
            ns = SimNetworkServer(target.url, net_id, token=token, answer_port=0 if async_answers else None)
            await ns.start()
            nss[name] = ns
            extra: dict[str, Any] = {"async_mode": True} if async_answers else {}
            label = await target.add_network_server(
                net_id=net_id, kek=kek, token=token, answer_url=ns.answer_url, **extra
            )
            ns.keks[label] = kek
            scenario.network_servers[name] = NetworkServerSpec(name, net_id, token, label, kek, async_answers)
        allow_roaming = getattr(target, "add_roaming_agreement", None)
        if with_visited and allow_roaming is not None:  # a Join Server that asks for roaming agreements
            await allow_roaming(home_id, visited_id)
        join_eui = secrets.token_bytes(8)
        for version in versions:
            v = normalize_mac_version(version)
            for _ in range(devices_per_version):
                dev = SimDevice(
                    secrets.token_bytes(8),
                    join_eui,
                    v,
                    secrets.token_bytes(16),
                    secrets.token_bytes(16) if is_lorawan_11(v) else None,
                )
                astk = secrets.token_bytes(16)
                astk_label = await target.add_device(
                    dev_eui=dev.dev_eui.hex(),
                    join_eui=join_eui.hex(),
                    mac_version=v,
                    app_key=dev.app_key,
                    nwk_key=dev.nwk_key,
                    home_net_id=home_id,
                    astk=astk,
                )
                if astk_label:
                    scenario.astks[astk_label] = astk
                    for ns in nss.values():
                        ns.astks[astk_label] = astk
                scenario.devices.append(dev)
    except BaseException:
        for ns in nss.values():
            await ns.close()
        raise
    return scenario, nss


def standard_steps(*, with_visited: bool = True) -> list[Step]:
    """Every scenario kind once, in an order where each step's preconditions hold."""
    steps = [
        Step("join"),
        Step("join"),
        Step("replay"),
        Step("wrong_key"),
        Step("join"),
        Step("wrong_net_id"),
        Step("join"),
        Step("join", versions=("1.1",), mac_version="1.0.3"),
        Step("join", versions=("1.1",)),
        Step("rejoin", rejoin_type=0),
        Step("rejoin", rejoin_type=1),
        Step("rejoin", rejoin_type=2),
        Step("app_s_key"),
    ]
    if with_visited:
        steps += [Step("wrong_net_id", ns="visited"), Step("home_ns", ns="visited"), Step("join")]
    return steps


def save_state(path: str | Path, devices: Sequence[SimDevice]) -> None:
    """Write the devices' nonce state (no keys) so the next run continues their DevNonces."""
    Path(path).write_text(json.dumps({d.dev_eui.hex(): d.state() for d in devices}, indent=1) + "\n")


def load_state(path: str | Path, devices: Sequence[SimDevice]) -> None:
    """Restore nonce state written by :func:`save_state`; a missing file means a first run."""
    p = Path(path)
    if not p.exists():
        return
    states = json.loads(p.read_text())
    for d in devices:
        if d.dev_eui.hex() in states:
            d.load_state(states[d.dev_eui.hex()])
