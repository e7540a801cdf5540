"""CPU per join of the daemon, by thread, for one or more code trees run alternately (A/B on a shared machine).

    python bench/join_cpu.py --state DIR [--devices 100000] [--version 1.0.2|1.1] [--seconds 8] [--rounds 2] \
        [LABEL=PYTHONPATH ...]

Uses a registry provisioned by ``bench/join_load.py --state DIR``. Each code tree (``main=/tmp/main-export``; a
bare ``LABEL=`` runs the installed tree) gets a fresh daemon, a warm-up, then a closed-loop wrk window; the user
and system CPU of every thread of the daemon over that window (``/proc/<pid>/task``) is divided by the Success
answers. Trees alternate round by round, so each pair shares the machine's load of that minute: compare CPU
per join, not joins/s. Threads are told apart by what they are, not by name (all are ``python`` to the kernel):
the workers' main threads are the event loops; of the other threads of a worker, the busiest is the PKCS#11
thread and the next the SQLite writer (true under join load, where the HSM call is the largest single cost).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import join_load as load_bench  # noqa: E402 - the bench directory is put on the path just above

Ticks = dict[tuple[int, int], tuple[int, int]]  # (pid, tid) -> (user, system) clock ticks


def thread_ticks(pids: list[int]) -> Ticks:
    ticks: Ticks = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            ticks[(pid, int(task.name))] = (int(fields[11]), int(fields[12]))
    return ticks


def by_role(before: Ticks, after: Ticks, supervisor: int) -> dict[str, tuple[int, int]]:
    """CPU ticks over the window, summed per role: event loop, HSM thread, SQLite writer, other."""
    per_worker: dict[int, list[tuple[int, int, int]]] = {}
    roles: dict[str, tuple[int, int]] = {}

    def add(role: str, user: int, system: int) -> None:
        u, s = roles.get(role, (0, 0))
        roles[role] = (u + user, s + system)

    for (pid, tid), (user, system) in after.items():
        u0, s0 = before.get((pid, tid), (0, 0))
        user, system = user - u0, system - s0
        if pid == supervisor:
            add("supervisor", user, system)
        elif tid == pid:
            add("event loops", user, system)
        else:
            per_worker.setdefault(pid, []).append((user + system, user, system))
    for threads in per_worker.values():
        threads.sort(reverse=True)
        for rank, (_total, user, system) in enumerate(threads):
            add(("PKCS#11 threads", "SQLite writers")[rank] if rank < 2 else "other threads", user, system)
    return roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--version", default="1.0.2", choices=("1.0.2", "1.1"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("codes", nargs="*", default=["installed="], help="LABEL=PYTHONPATH ('' = installed tree)")
    args = parser.parse_args()
    load_bench.ensure_wrk()
    _, token = load_bench.bench_secrets(args.state)
    bodies = args.state / "bodies-cpu.jsonl"
    clock = os.sysconf("SC_CLK_TCK")
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for code in args.codes:
            label, _, path = code.partition("=")
            if path:
                os.environ["PYTHONPATH"] = path
            else:
                os.environ.pop("PYTHONPATH", None)
            count = int(args.seconds * 3000)
            nonce_base = load_bench.next_nonce_base(args.state)
            load_bench.build_bodies(bodies, args.version, count, args.devices, 7919 * round_ + 13, nonce_base)
            port = load_bench.free_port()
            process = load_bench.start_daemon(args.state, port, args.workers, args.state / "daemon-cpu.log")
            tree = load_bench.RssSampler(process.pid)
            try:
                load_bench.run_wrk(port, bodies, token, 2, 8, 0)  # warm-up: KEK copies, connections
                nonce_base = load_bench.next_nonce_base(args.state)
                load_bench.build_bodies(bodies, args.version, count, args.devices, 7919 * round_ + 7, nonce_base)
                before = thread_ticks(tree.tree())
                load = load_bench.run_wrk(port, bodies, token, args.seconds, 32, 0)
                after = thread_ticks(tree.tree())
            finally:
                load_bench.stop_daemon(process)
            joins = max(1.0, load["joins"])
            roles = by_role(before, after, process.pid)
            total = sum(u + s for u, s in roles.values()) * 1000 / clock / joins
            results.setdefault(label, []).append(total)
            parts = ", ".join(
                f"{role} {(u + s) * 1000 / clock / joins:.3f} (sys {s * 1000 / clock / joins:.3f})"
                for role, (u, s) in sorted(roles.items(), key=lambda kv: -sum(kv[1]))
                if u + s
            )
            print(f"{label:10} {args.version} {load['joins_per_s']:6.0f} joins/s  {total:.3f} ms CPU/join: {parts}",
                  flush=True)
    for label, values in results.items():
        print(f"{label:10} min {min(values):.3f}  max {max(values):.3f} ms CPU per join over {len(values)} runs")


if __name__ == "__main__":
    main()
