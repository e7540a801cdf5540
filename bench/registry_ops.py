"""Registry hot path alone: `get_device` + `commit_join` per second and CPU per join, as the daemon calls them.

    python bench/registry_ops.py [--devices 100000] [--seconds 8] [--inflight 32] [--workers 1 2]
                                 [--backends sqlite postgresql] [--dir DIR] [--pg URL]
                                 [--rate JOINS_PER_S_PER_WORKER] [--burn-ms MS] [--uvloop]

Each backend gets a fresh registry of `--devices` devices (`add_devices_bulk`, dummy 24-byte blobs): a SQLite
file in `--dir` (on a real disk: synchronous=FULL is the point) or a new PostgreSQL schema, dropped at the end.
For each worker count, that many processes are spawned; each opens its own engine and `Registry` (like
`jsd serve` workers), warms up, waits at a barrier, then keeps `--inflight` joins in flight for `--seconds`:
read the device, compute the next nonce state, `commit_join` it with a session key. Callers own disjoint
devices (the join service already serialises one device inside a process), so every commit should succeed.

CPU per join is `time.process_time()` of the worker process (every thread: event loop and driver) over the
window divided by the joins it finished; the budget is 0.3 ms. A read-only phase (`get_device` alone) follows.
Latency is of one get+commit pair, with `--inflight` of them competing, so it includes queueing.

`--rate` switches to an open loop at the daemon's target instead: joins arrive at random (Poisson) at that
rate per worker, at most `--inflight` at once, and latency counts from the arrival. `--burn-ms` spends that
much CPU on the event loop between the read and the commit of each join, standing in for HTTP and HSM work
(and is not counted in the registry's CPU per join). The open loop's own timer and task cost ≈0.08 ms CPU
per arrival on the project machine, and is counted.

Columns: `sys` is the kernel's share of that CPU (fsync, WAL writes, thread wake-ups); `j/tx` is joins per
write transaction, from `Registry.write_stats` (group commit; "-" for a registry without it).

Measured on the project machine (2 cores, other benchmarks running, load average 2–5), 100,000 devices.
Closed loop, 32 joins in flight per worker (joins/s, CPU ms per join, p99 ms):

    registry before group commit       sqlite 1w   161  4.83  1512    2w   194  5.13  1963
                                       pg     1w   429  2.16   240    2w   579  2.04   318
    group commit, driver hot path      sqlite 1w  4976  0.17    12    2w  7941  0.16    18
                                       pg     1w  5981  0.11     9    2w  7204  0.12    17

Open loop at the target, 500 joins/s per worker with 1 ms of other CPU per join (`--rate 500 --burn-ms 1
--inflight 64`): before, the workers fall behind (sqlite 218 joins/s with 2 workers, p99 6.6 s; pg 390,
p99 5.1 s); after, both keep up (988 joins/s with 2 workers; p99 46 ms sqlite, 49 ms pg), at 0.53 / 0.42 ms
CPU per join counting the harness, with 2.5 / 2.2 joins per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

PG_URL = os.environ.get("JSD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BLOB = bytes(24)


def dev_eui_of(index: int) -> bytes:
    return bytes.fromhex("be00") + index.to_bytes(6, "big")


@dataclass(frozen=True)
class Job:
    url: str
    worker: int
    workers: int
    devices: int
    seconds: float
    inflight: int
    run: int
    rate: float
    burn_ms: float
    uvloop: bool


@dataclass(frozen=True)
class WorkerResult:
    joins: int
    join_cpu: float
    join_wall: float
    join_system: float
    latencies: list[float]
    errors: dict[str, int]
    reads: int
    read_cpu: float
    read_wall: float
    batches: int | None


def _owned(job: Job, caller: int) -> Iterator[bytes]:
    """The devices of one caller: disjoint across callers and workers, cycled if the window is long."""
    stride = job.workers * job.inflight
    first = job.worker * job.inflight + caller
    while True:
        yield from (dev_eui_of(i) for i in range(first, job.devices, stride))


async def _worker_main(job: Job, barrier: Barrier) -> WorkerResult:
    from jsd.registry import NonceState, Registry, SessionKey, create_engine

    engine = create_engine(job.url)
    registry = Registry(engine)
    stop = False
    joins = 0
    reads = 0
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sequence = itertools.count()
    system: list[float] = []  # kernel part of the CPU of each timed phase

    burnt = 0.0

    def burn() -> None:
        nonlocal burnt
        started = time.process_time()
        deadline = time.perf_counter() + job.burn_ms / 1e3
        while time.perf_counter() < deadline:
            pass
        burnt += time.process_time() - started

    async def one_join(dev_eui: bytes, seq: int, caller: int) -> None:
        device = await registry.get_device(dev_eui)
        assert device is not None
        if job.burn_ms:
            burn()
        s = device.nonces
        dev_nonce = (s.last_dev_nonce or 0) + 1 & 0xFFFF
        new = NonceState(s.version, s.join_nonce + 1, dev_nonce, (*s.used_dev_nonces[-15:], dev_nonce), None, None)
        key_id = f"{job.run:02x}{job.worker:02x}{caller:04x}{seq:08x}".ljust(32, "0")
        key = SessionKey(key_id, dev_eui, "default", BLOB, new.join_nonce, dev_nonce)
        await registry.commit_join(dev_eui, s.version, new, key)

    async def join_caller(caller: int, record: bool) -> None:
        nonlocal joins
        for dev_eui in _owned(job, caller):
            if stop:
                return
            seq = next(sequence)
            started = time.perf_counter()
            try:
                await one_join(dev_eui, seq, caller)
            except Exception as exc:  # counted and reported: a benchmark must not hide failures
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if record:
                joins += 1
                latencies.append(time.perf_counter() - started)

    async def paced(record: bool) -> None:
        """Open loop: Poisson arrivals at `job.rate`, each served by a free caller (its devices)."""
        nonlocal joins
        free: asyncio.Queue[int] = asyncio.Queue()
        for caller in range(job.inflight):
            free.put_nowait(caller)
        devices = [_owned(job, caller) for caller in range(job.inflight)]
        rng = random.Random(job.worker)
        running: set[asyncio.Task[None]] = set()

        async def serve(caller: int, arrival: float) -> None:
            nonlocal joins
            try:
                await one_join(next(devices[caller]), next(sequence), caller)
            except Exception as exc:  # counted and reported: a benchmark must not hide failures
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            else:
                if record:
                    joins += 1
                    latencies.append(time.perf_counter() - arrival)
            finally:
                free.put_nowait(caller)

        arrival = time.perf_counter()
        while not stop:
            arrival += rng.expovariate(job.rate)
            delay = arrival - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            caller = await free.get()
            task = asyncio.create_task(serve(caller, arrival))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running)

    async def read_caller(caller: int) -> None:
        nonlocal reads
        for dev_eui in _owned(job, caller):
            if stop:
                return
            await registry.get_device(dev_eui)
            reads += 1
            if reads % 16 == 0:
                await asyncio.sleep(0)  # a SQLite read may complete without suspending: let the timer run

    async def timed(callers: list[Any]) -> tuple[float, float]:
        nonlocal stop
        stop = False
        cpu, wall, sys0 = time.process_time(), time.perf_counter(), os.times().system
        tasks = [asyncio.create_task(c) for c in callers]
        await asyncio.sleep(job.seconds)
        stop = True
        await asyncio.gather(*tasks)
        system.append(os.times().system - sys0)
        return time.process_time() - cpu, time.perf_counter() - wall

    def join_load(record: bool) -> list[Any]:
        if job.rate:
            return [paced(record)]
        return [join_caller(c, record) for c in range(job.inflight)]

    warm = [asyncio.create_task(c) for c in join_load(False)]
    await asyncio.sleep(0.5)
    stop = True
    await asyncio.gather(*warm)
    errors.clear()
    batches_before = _batches(registry)

    await asyncio.to_thread(barrier.wait)
    burnt = 0.0
    join_cpu, join_wall = await timed(join_load(True))
    join_cpu -= burnt
    batches_after = _batches(registry)
    await asyncio.to_thread(barrier.wait)
    read_cpu, read_wall = await timed([read_caller(c) for c in range(job.inflight)])
    await engine.dispose()
    batches = None if batches_before is None or batches_after is None else batches_after - batches_before
    return WorkerResult(
        joins, join_cpu, join_wall, system[0], latencies, errors, reads, read_cpu, read_wall, batches
    )


def _batches(registry: Any) -> int | None:
    """Write transactions so far, if this registry counts them (group commit); None otherwise."""
    stats = getattr(registry, "write_stats", None)
    return None if stats is None else int(stats.transactions)


def _worker(job: Job, barrier: Barrier, results: Any) -> None:
    if job.uvloop:  # what `jsd serve` workers run on when uvloop is installed
        import uvloop

        results.put((job.worker, uvloop.run(_worker_main(job, barrier))))
    else:
        results.put((job.worker, asyncio.run(_worker_main(job, barrier))))


async def _provision(url: str, devices: int) -> None:
    from jsd.registry import NewDevice, Registry, create_engine, migrate

    engine = create_engine(url)
    try:
        await migrate(engine)
        await Registry(engine).add_devices_bulk(
            NewDevice(dev_eui_of(i), bytes(8), "1.0.3", "default", BLOB) for i in range(devices)
        )
    finally:
        await engine.dispose()


async def _pg_admin(statement: str, pg_url: str) -> None:
    from sqlalchemy import text

    from jsd.registry import create_engine

    engine = create_engine(pg_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _run(url: str, args: argparse.Namespace, workers: int, run: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    jobs = [
        Job(url, w, workers, args.devices, args.seconds, args.inflight, run, args.rate, args.burn_ms, args.uvloop)
        for w in range(workers)
    ]
    processes = [ctx.Process(target=_worker, args=(job, barrier, results)) for job in jobs]
    for p in processes:
        p.start()
    got = [results.get(timeout=args.seconds * 4 + 120)[1] for _ in processes]
    for p in processes:
        p.join()
    joins = sum(r.joins for r in got)
    reads = sum(r.reads for r in got)
    latencies = sorted(x for r in got for x in r.latencies)
    errors: dict[str, int] = {}
    for r in got:
        for name, count in r.errors.items():
            errors[name] = errors.get(name, 0) + count
    batches = [r.batches for r in got]
    return {
        "workers": workers,
        "joins_per_s": joins / max(r.join_wall for r in got),
        "cpu_ms_per_join": sum(r.join_cpu for r in got) / max(joins, 1) * 1e3,
        "sys_share": sum(r.join_system for r in got) / max(sum(r.join_cpu for r in got), 1e-9),
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else float("nan"),
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
        "joins_per_tx": joins / sum(b for b in batches if b) if all(batches) else None,
        "reads_per_s": reads / max(r.read_wall for r in got),
        "cpu_ms_per_read": sum(r.read_cpu for r in got) / max(reads, 1) * 1e3,
        "errors": errors,
    }


def _print_row(backend: str, row: dict[str, Any]) -> None:
    per_tx = "-" if row["joins_per_tx"] is None else f"{row['joins_per_tx']:.1f}"
    print(
        f"{backend:<10} {row['workers']:>2} {row['joins_per_s']:>9.0f} {row['cpu_ms_per_join']:>9.3f} {row['sys_share']:>4.0%}"
        f" {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f} {per_tx:>7}"
        f" {row['reads_per_s']:>9.0f} {row['cpu_ms_per_read']:>9.3f}  {row['errors'] or ''}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--inflight", type=int, default=32, help="concurrent joins per worker process")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: joins/s per worker (0: closed loop)")
    parser.add_argument("--burn-ms", type=float, default=0.0, help="CPU spent per join outside the registry")
    parser.add_argument("--uvloop", action="store_true", help="run the workers on uvloop, as jsd serve does")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--pg", default=PG_URL, help="PostgreSQL URL of a database where schemas may be created")
    args = parser.parse_args()

    import jsd.registry

    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"registry code: {Path(jsd.registry.__file__).parent}; load average at start: {load_avg}")
    load = f"open loop {args.rate:g} joins/s per worker, " if args.rate else "closed loop, "
    print(
        f"{os.cpu_count()} CPUs, {args.devices} devices, {load}at most {args.inflight} joins in flight per "
        f"worker, {args.burn_ms:g} ms other CPU per join, {args.seconds:g} s per run"
        f"{', uvloop' if args.uvloop else ''}",
        flush=True,
    )
    print(
        f"{'backend':<10} {'w':>2} {'joins/s':>9} {'cpu ms/j':>9} {'sys':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'j/tx':>7} {'reads/s':>9} {'cpu ms/r':>9}"
    )
    run = secrets.randbelow(200)
    for backend in args.backends:
        schema = None
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="jsd-bench-") as tmp:
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'registry.sqlite3'}"
            else:
                schema = f"bench_{secrets.token_hex(4)}"
                asyncio.run(_pg_admin(f'CREATE SCHEMA "{schema}"', args.pg))
                url = f"{args.pg}?search_path={schema}"
            try:
                asyncio.run(_provision(url, args.devices))
                for workers in args.workers:
                    run += 1
                    _print_row(backend, _run(url, args, workers, run))
            finally:
                if schema is not None:
                    asyncio.run(_pg_admin(f'DROP SCHEMA "{schema}" CASCADE', args.pg))


if __name__ == "__main__":
    sys.exit(main())
