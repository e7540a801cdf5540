"""The daemon's stop ends the publisher even when a cancellation is lost on the way.

On Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives in the loop turn where its call
completes; aiomqtt awaits every broker call through it, so a publisher stopped just as a PUBACK came in went
on serving and ``runner.cleanup()`` waited forever (seen as a rare pytest-timeout in a test that stops a
daemon right after a command's reply).
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from jsd import events
from jsd.registry.lease import Lease


class _Held(Lease):
    def __init__(self) -> None:
        self.released = 0

    async def acquire(self) -> bool:
        return True

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        self.released += 1


async def test_wait_for_drops_a_cancellation_that_meets_its_result() -> None:
    """The mechanism itself, so this module says when it is no longer needed (Python 3.12 fixed it)."""
    done = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(asyncio.wait_for(done, 10))
    await asyncio.sleep(0)
    done.set_result("reply")
    waiter.cancel()
    outcome = await asyncio.gather(waiter, return_exceptions=True)
    assert (outcome == ["reply"]) == (sys.version_info < (3, 12)), outcome


async def test_a_publisher_that_loses_its_cancellation_is_cancelled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "RECANCEL", 0.2)
    started, lost = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # as aiomqtt's wait_for does on 3.11 when the PUBACK is there already
            lost.set()
        await asyncio.sleep(3600)  # serving on

    lease = _Held()
    events_task = asyncio.create_task(events.lead(lease, work, 0.05))
    await asyncio.wait_for(started.wait(), 5)
    began = time.monotonic()
    events_task.cancel()
    await asyncio.wait_for(asyncio.gather(events_task, return_exceptions=True), events.RECANCEL + 5)
    assert lost.is_set(), "the first cancellation reached the publisher"
    assert time.monotonic() - began < events.RECANCEL + 2
    assert lease.released == 1, "the lease is given back"
