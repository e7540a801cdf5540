"""The simulator's load mode against the daemon, beside the HTTP ceiling and the HSM-crypto-only ceiling.

    python bench/sim_load.py [--devices 20000] [--seconds 10] [--concurrency 32] [--generators 2] [--state DIR]

One run on one machine:
1. provisions a registry (half LoRaWAN 1.0.2, half 1.1; ``bench/join_load.py``) and writes the device CSV
   ``jsd sim load --csv`` reads (``dev_eui,join_eui,mac_version,app_key,nwk_key``);
2. starts ``jsd serve`` (2 workers) and runs ``jsd_sim.load.run_load`` closed-loop against it, for the
   1.0.2 and then the 1.1 devices, every answer verified as a tester runs it (device opens the join-accept,
   network and application server unwrap keys equal to the device's);
3. stops it and runs the same load against ``bench/http_ceiling.py`` (its app in 2 processes sharing the
   port with SO_REUSEPORT, as the daemon's workers do; answers not verifiable, so ``verify=False``);
4. measures ``bench/hsm_crypto.py``'s crypto-only joins/s with 2 processes;
5. prints joins/s, p50/p99 and the ratios daemon/HTTP ceiling and daemon/HSM-only, and where the CPU went.

The simulator is Python and shares the 2 cores with the server under load, so it runs in ``--generators``
processes (each with its own devices, never the same device twice at once) and every leg reports the CPU
seconds of the server, of each generator process (``resource.getrusage``) and of everything else on the
machine (``/proc/stat``), and names what bound it. Results also go to ``bench/results/``.

``--state DIR`` keeps the registry (shared with ``join_load.py``) and a stored DevNonce base, so the 1.1
counters keep growing across runs; 1.0.2 DevNonces are random, so many runs on a small kept registry may
meet a rare JoinReqFailed for a value an earlier run used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from join_load import (  # noqa: E402  (bench/ is not a package)
    HOME,
    JOIN_EUI,
    NONCE_STEP,
    RssSampler,
    bench_secrets,
    dev_eui_of,
    device_keys,
    free_port,
    next_nonce_base,
    provision,
    start_daemon,
    stop_daemon,
    version_of,
)

WORKERS = 2
VERSIONS = (("1.0.2", "1.0"), ("1.1", "1.1"))  # (device MAC version, hsm_crypto version)
NS_KEK_LABEL = "ns-bench"  # the labels provision() imports the KEK under
ASTK_LABEL = "astk-bench"
WARMUP_JOINS_PER_DEVICE = 10  # at most, so warm-up and measured run stay inside one NONCE_STEP
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class GeneratorJob:
    """What one load-generator process runs: its share of one version's devices and of the concurrency."""

    url: str
    csv: str
    mac_version: str
    part: int
    parts: int
    concurrency: int
    warmup_s: float
    seconds: float
    nonce_base: int
    verify: bool
    token: str
    kek: bytes


def write_device_csv(path: Path, devices: int) -> None:
    """The registry's devices with their root keys, in the simulator's CSV format (bench keys, mode 0600)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("dev_eui,join_eui,mac_version,app_key,nwk_key\n")
        for index in range(devices):
            dev_eui = dev_eui_of(index)
            app_key, nwk_key = device_keys(dev_eui)
            version = version_of(index)
            nwk = nwk_key.hex() if version == "1.1" else ""
            out.write(f"{dev_eui.hex()},{JOIN_EUI.hex()},{version},{app_key.hex()},{nwk}\n")


def generator(job: GeneratorJob, barrier: Barrier, results: Queue[dict[str, Any]]) -> None:
    """Child process: warm up (connections, daemon caches), wait for the others, then the measured run."""
    from jsd_sim import LoadConfig, SimNetworkServer, load_devices_csv, run_load

    devices = [d for d in load_devices_csv(job.csv) if d.mac_version == job.mac_version][job.part :: job.parts]
    for device in devices:
        device.next_dev_nonce = job.nonce_base

    async def run() -> dict[str, Any]:
        ns = SimNetworkServer(
            job.url,
            HOME,
            token=job.token,
            kek_label=NS_KEK_LABEL,
            kek=job.kek,
            astks={ASTK_LABEL: job.kek},
            connection_limit=max(job.concurrency, 100),
        )
        async with ns:
            warm = LoadConfig(
                mode="closed",
                concurrency=job.concurrency,
                duration=job.warmup_s,
                total=len(devices) * WARMUP_JOINS_PER_DEVICE,
                verify=job.verify,
            )
            await run_load(ns, devices, warm, progress=None)
            barrier.wait(timeout=120)
            before = resource.getrusage(resource.RUSAGE_SELF)
            measured = LoadConfig(
                mode="closed",
                concurrency=job.concurrency,
                duration=job.seconds,
                total=len(devices) * (NONCE_STEP - WARMUP_JOINS_PER_DEVICE - 1),
                verify=job.verify,
            )
            report = await run_load(ns, devices, measured, progress=None)
            after = resource.getrusage(resource.RUSAGE_SELF)
        used = max(d.next_dev_nonce - job.nonce_base for d in devices)
        if devices[0].is_11 and used > NONCE_STEP:
            raise RuntimeError(f"a device used {used} DevNonces, more than the {NONCE_STEP} a run may")
        return {
            "report": report.to_json(),
            "latencies_s": report.latencies_s,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "devices": len(devices),
        }

    results.put(asyncio.run(run()))


def process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by these processes."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def machine_cpu_s() -> tuple[float, float, float]:
    """(busy, total, irq) CPU seconds of the whole machine so far, over all cores.

    irq + softirq is kept apart: loopback TCP is processed there and charged to no process.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK, (values[5] + values[6]) / CLK_TCK


def listeners(port: int) -> int:
    """Sockets listening on `port`: each SO_REUSEPORT worker has its own."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(port: int, count: int) -> None:
    """Kept-alive connections stick to the worker that accepted them: load only once all workers listen."""
    deadline = time.monotonic() + 60
    while listeners(port) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {listeners(port)} of {count} workers listen on port {port}")
        time.sleep(0.1)


def serve_ceiling(port: int, mac_version: str) -> None:
    """Child process: one worker of the HTTP ceiling (http_ceiling.py has no worker option of its own)."""
    from aiohttp import web
    from http_ceiling import build_app

    web.run_app(build_app(mac_version), host="127.0.0.1", port=port, reuse_port=True, access_log=None, print=None)


def run_leg(server_pids: list[int], job: GeneratorJob, concurrency: int, generators: int) -> dict[str, Any]:
    """One closed-loop load over all generator processes; joins/s, merged latencies and where the CPU went."""
    from jsd_sim import LatencyStats

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(generators + 1)
    results: Queue[dict[str, Any]] = context.Queue()
    processes: list[BaseProcess] = []
    for index in range(generators):
        share = concurrency // generators + (index < concurrency % generators)
        part_job = replace(job, part=index, parts=generators, concurrency=share)
        processes.append(context.Process(target=generator, args=(part_job, barrier, results)))
    for process in processes:
        process.start()
    try:
        barrier.wait(timeout=job.warmup_s + 120)
        server0, (busy0, total0, irq0), wall0 = process_cpu_s(server_pids), machine_cpu_s(), time.monotonic()
        parts = [results.get(timeout=job.seconds + 60) for _ in processes]
        server1, (busy1, total1, irq1), wall1 = process_cpu_s(server_pids), machine_cpu_s(), time.monotonic()
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    latencies = [x for part in parts for x in part["latencies_s"]]
    stats = LatencyStats.from_seconds(latencies)
    elapsed = max(part["report"]["elapsed_s"] for part in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["report"]["errors"].items():
            errors[code] = errors.get(code, 0) + n
    wall = wall1 - wall0
    cores = (total1 - total0) / wall
    generator_cpu = [part["cpu_s"] for part in parts]
    server_cpu = server1 - server0
    other_cpu = max(0.0, (busy1 - busy0) - (irq1 - irq0) - server_cpu - sum(generator_cpu))
    return {
        "joins_per_s": len(latencies) / elapsed,
        "ok": len(latencies),
        "sent": sum(part["report"]["sent"] for part in parts),
        "elapsed_s": elapsed,
        "p50_ms": stats.p50,
        "p90_ms": stats.p90,
        "p99_ms": stats.p99,
        "max_ms": stats.max,
        "errors": errors,
        "verify": job.verify,
        "concurrency": concurrency,
        "generators": generators,
        "devices": sum(part["devices"] for part in parts),
        "cpu": {
            "wall_s": wall,
            "cores": cores,
            "server_s": server_cpu,
            "generator_s": generator_cpu,
            "irq_s": irq1 - irq0,
            "other_s": other_cpu,
            "idle_s": max(0.0, (total1 - total0) - (busy1 - busy0)),
        },
    }


def bound_by(cpu: dict[str, Any]) -> str:
    """Name the resource that limited a leg, from where the CPU seconds went."""
    wall, cores = cpu["wall_s"], cpu["cores"]
    generator_max = max(cpu["generator_s"]) / wall
    busy_s = cpu["server_s"] + sum(cpu["generator_s"]) + cpu["irq_s"] + cpu["other_s"]
    busy = busy_s / wall
    if generator_max > 0.9:
        return f"load generator (one process at {generator_max:.0%} of a core)"
    if busy > 0.9 * cores:
        share = cpu["server_s"] / busy_s
        return f"machine CPU ({busy:.2f} of {cores:.0f} cores busy, server's share {share:.0%})"
    return f"not CPU ({busy:.2f} of {cores:.0f} cores busy): waiting inside the server"


def cpu_line(name: str, leg: dict[str, Any]) -> str:
    """Cores each party kept busy during a leg's measured window."""
    cpu = leg["cpu"]
    wall = cpu["wall_s"]
    gens = "+".join(f"{s / wall:.2f}" for s in cpu["generator_s"])
    return (
        f"  {name:<18} server {cpu['server_s'] / wall:.2f}  generator {gens} ({sum(cpu['generator_s']):.1f} "
        f"CPU-s in {wall:.1f} s)  irq {cpu['irq_s'] / wall:.2f}  other {cpu['other_s'] / wall:.2f}  "
        f"idle {cpu['idle_s'] / wall:.2f} cores  -> bound: {bound_by(cpu)}"
    )


def hsm_only(measure: Callable[[str, float, int], float], label: str, seconds: float) -> tuple[float, float]:
    """Crypto-only joins/s, and the cores other work on the machine took meanwhile (a shared machine skews it)."""
    children0, (busy0, _, irq0) = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu_s()
    wall0 = time.monotonic()
    rate = measure(label, seconds, WORKERS)
    children1, (busy1, _, irq1) = resource.getrusage(resource.RUSAGE_CHILDREN), machine_cpu_s()
    wall1 = time.monotonic()
    ours = (children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime)
    return rate, max(0.0, (busy1 - busy0) - (irq1 - irq0) - ours) / (wall1 - wall0)


def code_version() -> str:
    """The commit of the `jsd` and `jsd_sim` actually imported, and whether their tree has uncommitted changes."""
    import jsd

    root = Path(jsd.__file__).resolve().parent.parent
    git = ["git", "-C", str(root)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "jsd", "cli"], capture_output=True, text=True).stdout
    return f"{commit or 'unknown'}{' + uncommitted changes' if dirty.strip() else ''} ({root})"


def ratio(a: float, b: float | None) -> str:
    """a/b for the table, '-' when there is no b."""
    return f"{a / b:.2f}" if b else "-"


def main() -> None:
    """Run the legs, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window of each leg")
    parser.add_argument("--concurrency", type=int, default=32, help="joins in flight, over all generators")
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measured window")
    parser.add_argument("--state", type=Path, help="keep the provisioned registry here between runs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: the daemon has its own session
    if args.devices < 2 * args.concurrency:
        sys.exit("--devices must be at least twice --concurrency (each version needs one device per join in flight)")

    load_at_start = os.getloadavg()
    print(
        f"load average at start: {load_at_start[0]:.2f} {load_at_start[1]:.2f} {load_at_start[2]:.2f} "
        f"({os.cpu_count()} cores)",
        flush=True,
    )
    state = args.state or Path(tempfile.mkdtemp(prefix="jsd-bench-sim-"))
    state.mkdir(parents=True, exist_ok=True)
    kek, token = bench_secrets(state)
    print(f"provisioning {args.devices} devices in {state}", file=sys.stderr)
    asyncio.run(provision(state, args.devices, kek, token))
    csv = state / "devices.csv"
    write_device_csv(csv, args.devices)
    nonce_base = next_nonce_base(state)

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_average_at_start": load_at_start,
        "devices": args.devices,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "generators": args.generators,
        "server_workers": WORKERS,
        "code": code_version(),
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/"

    def job(mac_version: str, verify: bool) -> GeneratorJob:
        """The same load for every leg; only the URL and verification differ."""
        return GeneratorJob(
            url,
            str(csv),
            mac_version,
            0,
            1,
            args.concurrency,
            args.warmup,
            args.seconds,
            nonce_base,
            verify,
            token,
            kek,
        )

    daemon = start_daemon(state, port, WORKERS, state / "daemon.log")
    try:
        wait_listening(port, WORKERS)
        pids = RssSampler(daemon.pid).tree()
        for mac_version, label in VERSIONS:
            leg = run_leg(pids, job(mac_version, True), args.concurrency, args.generators)
            results[label] = {"daemon": leg}
            print(
                f"  daemon {mac_version}: {leg['joins_per_s']:.0f} joins/s, p50 {leg['p50_ms']:.1f} ms, "
                f"p99 {leg['p99_ms']:.1f} ms, errors {leg['errors'] or 'none'}",
                file=sys.stderr,
            )
    finally:
        stop_daemon(daemon)

    context = multiprocessing.get_context("spawn")
    for mac_version, label in VERSIONS:
        ceiling_port = free_port()
        ceiling_url = f"http://127.0.0.1:{ceiling_port}/"
        servers = [
            context.Process(target=serve_ceiling, args=(ceiling_port, "1.0.3" if label == "1.0" else "1.1"))
            for _ in range(WORKERS)
        ]
        for server in servers:
            server.start()
        try:
            wait_listening(ceiling_port, WORKERS)
            leg = run_leg(
                [s.pid for s in servers if s.pid],
                replace(job(mac_version, False), url=ceiling_url),
                args.concurrency,
                args.generators,
            )
        finally:
            for server in servers:
                server.terminate()
                server.join(timeout=10)
        results[label]["http_ceiling"] = leg
        print(
            f"  HTTP ceiling {mac_version}: {leg['joins_per_s']:.0f} joins/s, p50 {leg['p50_ms']:.1f} ms, "
            f"p99 {leg['p99_ms']:.1f} ms",
            file=sys.stderr,
        )

    from hsm_crypto import measure

    for _, label in VERSIONS:
        results[label]["hsm_only_joins_per_s"], results[label]["hsm_only_other_cores"] = hsm_only(
            measure, label, args.seconds
        )
    results["load_average_at_end"] = os.getloadavg()

    print()
    print(f"code: {results['code']}")
    print(
        f"closed loop, {args.concurrency} joins in flight from {args.generators} simulator processes, "
        f"{args.seconds:g} s per leg, {args.devices} devices, server: {WORKERS} processes"
    )
    print(
        f"{'':7} {'daemon/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'ceiling/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'HSM-only/s':>10} {'daemon/ceiling':>14} {'daemon/HSM':>10}"
    )
    for mac_version, label in VERSIONS:
        r = results[label]
        d, c, h = r["daemon"], r["http_ceiling"], r["hsm_only_joins_per_s"]
        r["daemon_over_ceiling"] = d["joins_per_s"] / c["joins_per_s"] if c["joins_per_s"] else None
        r["daemon_over_hsm_only"] = d["joins_per_s"] / h if h else None
        print(
            f"{mac_version:7} {d['joins_per_s']:9.0f} {d['p50_ms']:7.1f} {d['p99_ms']:7.1f} "
            f"{c['joins_per_s']:10.0f} {c['p50_ms']:7.1f} {c['p99_ms']:7.1f} {h:10.0f} "
            f"{ratio(d['joins_per_s'], c['joins_per_s']):>14} {ratio(d['joins_per_s'], h):>10}"
        )
    print("\ncores kept busy during each measured window (server = daemon or ceiling processes):")
    for mac_version, label in VERSIONS:
        for kind in ("daemon", "http_ceiling"):
            leg = results[label][kind]
            leg["bound"] = bound_by(leg["cpu"])
            print(cpu_line(f"{kind} {mac_version}", leg))
            if leg["errors"]:
                print(f"    non-Success: {leg['errors']}")
    print(
        "  HSM-only (whole measurement, token set-up included): other work "
        + ", ".join(f"{results[label]['hsm_only_other_cores']:.2f}" for _, label in VERSIONS)
        + " cores"
    )
    print("HTTP ceiling answers are not verified (random keys); the daemon's are, at a generator-side cost.")
    print(f"load average at start {load_at_start[0]:.2f}, at end {results['load_average_at_end'][0]:.2f}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"sim_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
