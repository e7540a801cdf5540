"""Where a join's CPU goes: py-spy samples both workers of the real daemon under closed-loop wrk load.

    python bench/join_profile.py --state DIR [--version 1.0.2|1.1] [--seconds 15]

Uses a registry provisioned by ``bench/join_load.py --state DIR`` (run that first). py-spy (``pip install
py-spy``) records every thread of every worker; each sample is charged to the innermost frame that belongs
to a known part (logging, metrics, JSON, HSM, SQLite, HTTP, the join service, ...), so the shares add up to
the daemon's whole sampled CPU. The collapsed stacks are kept next to the printed table for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from join_load import (  # noqa: E402 - the bench directory is put on the path just above
    bench_secrets,
    build_bodies,
    ensure_wrk,
    free_port,
    next_nonce_base,
    run_wrk,
    start_daemon,
    stop_daemon,
)

# Innermost match wins; the first pattern of this list that a frame's file matches names its part.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("/logging/", "jsd/logs.py")),
    ("metrics", ("prometheus_client",  "jsd/metrics.py")),
    ("JSON", ("/json/", "jsd/bodies.py", "jsd/lbi/codec.py")),
    ("HSM (PKCS#11)", ("jsd/hsm/", "pkcs11")),
    ("SQLite / registry", ("sqlite3", "aiosqlite", "jsd/registry/", "sqlalchemy")),
    ("events / outbox", ("jsd/events/", "jsd/ownership/")),
    ("HTTP (aiohttp)", ("aiohttp/", "multidict", "yarl", "jsd/lbi/")),
    ("join service", ("jsd/join/", "jsd/lorawan/")),
    ("event loop / threads", ("asyncio/", "uvloop", "threading.py", "concurrent/")),
)


def part_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        match = re.search(r"\(([^)]*):\d+\)$", frame) or re.search(r"\(([^)]*)\)$", frame)
        filename = match.group(1) if match else frame
        for name, patterns in PARTS:
            if any(p in filename for p in patterns):
                return name
    return "other"


def shares(raw: Path) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[part_of(stack)] += int(count)
    total = sum(counts.values()) or 1
    return {name: 100 * n / total for name, n in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--version", default="1.0.2", choices=("1.0.2", "1.1"))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile.txt")
    args = parser.parse_args()
    ensure_wrk()
    _, token = bench_secrets(args.state)
    bodies = args.state / f"bodies-profile-{args.version}.jsonl"
    build_bodies(bodies, args.version, (args.seconds + 5) * 3000, args.devices, 0, next_nonce_base(args.state))
    port = free_port()
    process = start_daemon(args.state, port, args.workers, args.state / "daemon.log")
    args.out.parent.mkdir(exist_ok=True)
    try:
        load: dict[str, float] = {}
        driver = threading.Thread(target=lambda: load.update(run_wrk(port, bodies, token, args.seconds + 3, 32, 0)))
        driver.start()
        subprocess.run(
            ["py-spy", "record", "--pid", str(process.pid), "--subprocesses", "--format", "raw", "--rate", "200", "--threads",
             "--duration", str(args.seconds), "--nonblocking", "-o", str(args.out), *(["--gil"] if args.gil else [])],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        driver.join()
    finally:
        stop_daemon(process)
    print(f"{args.version}: {load.get('joins_per_s', 0):.0f} joins/s under the profiler (collapsed stacks: {args.out})")
    for name, share in shares(args.out).items():
        print(f"  {name:24} {share:5.1f} %")


if __name__ == "__main__":
    main()
