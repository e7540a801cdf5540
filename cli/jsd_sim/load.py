"""Load mode: many simulated devices joining through one simulated network server.

Open loop sends joins at a fixed arrival rate whatever the Join Server does (latency is measured from the
scheduled send time, so a slow server cannot hide queueing); closed loop keeps a fixed number of joins in
flight. Both are bounded by a duration and optionally by a request count, and stop by themselves. A device
is never used by two joins at once, since DevNonce order matters from LoRaWAN 1.0.4 on.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from jsd_sim.device import DevNonceExhausted, SimDevice
from jsd_sim.network_server import JoinServerDeviation, SimNetworkServer, TransportError

__all__ = ["LatencyStats", "LoadConfig", "LoadReport", "percentile", "run_load", "write_histogram_png"]


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values: the smallest value with at least p % at or below it."""
    if not sorted_values:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError("p must be in (0, 100]")
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def from_seconds(cls, latencies: Sequence[float]) -> LatencyStats:
        """Summarise latencies given in seconds."""
        ms = sorted(x * 1000 for x in latencies)
        if not ms:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(len(ms), percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), ms[-1], sum(ms) / len(ms))

    def figures(self) -> dict[str, float]:
        """The latencies by name, p50 to mean (the count left out), for the reports to list in one loop."""
        return {name: value for name, value in asdict(self).items() if name != "count"}


@dataclass(frozen=True)
class LoadConfig:
    """How to load: ``mode`` "open" (``rate`` joins/s) or "closed" (``concurrency`` joins in flight)."""

    mode: str = "closed"
    rate: float = 100.0
    concurrency: int = 8
    duration: float = 10.0
    total: int | None = None
    max_in_flight: int = 1000
    verify: bool = True
    mac_version: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise ValueError("mode must be 'open' or 'closed'")
        if self.duration <= 0 or (self.mode == "open" and self.rate <= 0) or self.concurrency < 1:
            raise ValueError("duration and rate must be positive, concurrency at least 1")


@dataclass
class LoadReport:
    """The outcome of a load run; latency counts successful joins only."""

    mode: str
    url: str
    offered_rate: float | None
    concurrency: int | None
    elapsed_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    latency: LatencyStats
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def joins_per_s(self) -> float:
        """Successful joins per second of wall time (arrivals plus draining)."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Machine-readable report (no per-request latencies)."""
        lat = self.latency
        return {
            "mode": self.mode,
            "url": self.url,
            "offered_rate": self.offered_rate,
            "concurrency": self.concurrency,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": self.sent,
            "ok": self.ok,
            "joins_per_s": round(self.joins_per_s, 1),
            "latency_ms": {"count": lat.count} | {name: _r(value) for name, value in lat.figures().items()},
            "errors": dict(sorted(self.errors.items())),
        }

    def to_text(self) -> str:
        """Human-readable report."""
        lat = self.latency
        if self.mode == "open":
            load = f"open loop at {self.offered_rate:g}/s"
        else:
            load = f"closed loop, {self.concurrency} in flight"
        lines = [
            f"load: {load} against {self.url}",
            f"  {self.sent} sent, {self.ok} ok in {self.elapsed_s:.2f} s = {self.joins_per_s:.1f} joins/s",
            "  latency ms: " + "  ".join(f"{name} {value:.2f}" for name, value in lat.figures().items()),
        ]
        if self.errors:
            lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())))
        else:
            lines.append("  errors: none")
        return "\n".join(lines)


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


class _Run:
    def __init__(self, ns: SimNetworkServer, devices: Sequence[SimDevice], config: LoadConfig) -> None:
        self.ns = ns
        self.config = config
        self.idle: deque[SimDevice] = deque(devices)
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.in_flight = 0

    async def one(self, device: SimDevice, t0: float) -> None:
        self.in_flight += 1
        try:
            lateness = time.perf_counter() - t0
            outcome = await self.ns.join(device, mac_version=self.config.mac_version, verify=self.config.verify)
            if outcome.ok:
                self.latencies.append(outcome.latency_s + lateness)
            else:
                self.errors[outcome.result_code or "(no ResultCode)"] += 1
        except JoinServerDeviation as exc:
            self.errors[f"deviation:{exc.check}"] += 1
        except TransportError:
            self.errors["transport"] += 1
        except DevNonceExhausted:
            self.errors["sim:dev-nonce-exhausted"] += 1
        finally:
            self.in_flight -= 1
            self.idle.append(device)

    def progress_line(self, elapsed: float) -> str:
        lat = LatencyStats.from_seconds(self.latencies)
        ok = len(self.latencies)
        return (
            f"\r{elapsed:6.1f}s  sent {self.sent}  ok {ok}  err {sum(self.errors.values())}  "
            f"{ok / elapsed if elapsed > 0 else 0:.1f} joins/s  p50 {lat.p50:.1f} ms  p99 {lat.p99:.1f} ms  "
            f"in flight {self.in_flight}   "
        )


async def run_load(
    ns: SimNetworkServer,
    devices: Sequence[SimDevice],
    config: LoadConfig,
    *,
    progress: TextIO | None = sys.stderr,
    progress_interval: float = 0.5,
) -> LoadReport:
    """Run joins across ``devices`` until ``duration`` (or ``total`` sends); print a live line to ``progress``."""
    if not devices:
        raise ValueError("load needs at least one device")
    run = _Run(ns, devices, config)
    await ns.start()
    start = time.perf_counter()
    deadline = start + config.duration
    tasks: set[asyncio.Task[None]] = set()

    def more() -> bool:
        return time.perf_counter() < deadline and (config.total is None or run.sent < config.total)

    def launch(device: SimDevice, t0: float) -> None:
        run.sent += 1
        task = asyncio.get_running_loop().create_task(run.one(device, t0))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def show() -> None:
        while True:
            await asyncio.sleep(progress_interval)
            if progress is not None:
                progress.write(run.progress_line(time.perf_counter() - start))
                progress.flush()

    shower = asyncio.get_running_loop().create_task(show())
    try:
        if config.mode == "open":
            interval = 1.0 / config.rate
            i = 0
            while more():
                t0 = start + i * interval
                delay = t0 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                    if not more():
                        break
                i += 1
                if not run.idle:
                    run.sent += 1
                    run.errors["sim:no-idle-device"] += 1
                elif run.in_flight >= config.max_in_flight:
                    run.sent += 1
                    run.errors["sim:in-flight-cap"] += 1
                else:
                    launch(run.idle.popleft(), t0)
        else:

            async def worker() -> None:
                while more() and run.idle:
                    run.sent += 1
                    await run.one(run.idle.popleft(), time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(config.concurrency)))
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        shower.cancel()
        try:
            await shower
        except asyncio.CancelledError:
            pass
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress.write(run.progress_line(elapsed) + "\n")
        progress.flush()
    return LoadReport(
        mode=config.mode,
        url=ns.js_url,
        offered_rate=config.rate if config.mode == "open" else None,
        concurrency=config.concurrency if config.mode == "closed" else None,
        elapsed_s=elapsed,
        sent=run.sent,
        ok=len(run.latencies),
        errors=dict(run.errors),
        latency=LatencyStats.from_seconds(run.latencies),
        latencies_s=run.latencies,
    )


def write_histogram_png(report: LoadReport, path: str) -> None:
    """A latency histogram as PNG; needs matplotlib, which the simulator does not depend on."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise RuntimeError("the latency histogram needs matplotlib (pip install matplotlib)") from None
    ms = [x * 1000 for x in report.latencies_s]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.hist(ms, bins=min(100, max(10, len(ms) // 20)))
    lat = report.latency
    for value, name in ((lat.p50, "p50"), (lat.p99, "p99")):
        if not math.isnan(value):
            ax.axvline(value, linestyle="--", color="black")
            ax.annotate(name, (value, ax.get_ylim()[1] * 0.9))
    ax.set_xlabel("join latency (ms)")
    ax.set_ylabel("joins")
    ax.set_title(f"{report.mode} loop: {report.joins_per_s:.0f} joins/s, {report.ok} joins")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
