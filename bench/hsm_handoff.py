"""CPU per hand-off to the PKCS#11 thread and back (`jsd.hsm._thread.call`), without PKCS#11 itself.

    python bench/hsm_handoff.py [--callers 1] [--calls 2000]   # PYTHONPATH picks the tree, run from outside it

Runs a trivial function through ``_thread.call`` from `callers` coroutines on uvloop, each awaiting `calls`
answers in turn, and prints the process's CPU (all threads) and wall time per call, five times. One caller is
a lone join; 32 is the queue a loaded worker can build.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

from jsd.hsm import _thread


def _work(value: int) -> int:
    return value + 1


async def _caller(calls: int) -> None:
    for value in range(calls):
        await _thread.call(_work, value)


async def _measure(callers: int, calls: int) -> None:
    await _thread.call(_work, 0)  # start the thread outside the window
    total = callers * calls
    for _ in range(5):
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(_caller(calls) for _ in range(callers)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"{callers} callers: {cpu / total * 1e6:6.2f} µs CPU, {wall / total * 1e6:6.2f} µs wall per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(f"jsd.hsm._thread from {_thread.__file__}")
    uvloop.run(_measure(args.callers, args.calls))


if __name__ == "__main__":
    main()
