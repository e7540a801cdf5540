"""The hand-off to the PKCS#11 thread: answers reach the right caller, failures and cancellations too."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jsd.hsm import _thread


async def test_many_callers_each_get_their_own_answer_from_one_thread() -> None:
    threads: set[int] = set()

    def job(value: int) -> int:
        threads.add(threading.get_ident())
        _thread.assert_hsm_thread()
        return value * 3

    answers = await asyncio.gather(*(_thread.call(job, n) for n in range(500)))

    assert answers == [n * 3 for n in range(500)]
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_a_failure_reaches_its_caller_only() -> None:
    def fail(message: str) -> None:
        raise KeyError(message)

    def fine() -> str:
        return "ok"

    results = await asyncio.gather(_thread.call(fail, "lost"), _thread.call(fine), return_exceptions=True)

    assert isinstance(results[0], KeyError) and results[0].args == ("lost",)
    assert results[1] == "ok"


async def test_a_call_cancelled_while_queued_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []

    def slow() -> None:
        release.wait(5)

    def record() -> None:
        ran.append("late")

    blocker = _thread.call(slow)
    queued = _thread.call(record)
    queued.cancel()
    release.set()
    await blocker
    await _thread.call(lambda: None)  # everything queued before it has been handled

    assert ran == []
    with pytest.raises(asyncio.CancelledError):
        await queued


async def test_a_caller_cancelled_while_its_call_runs_is_left_alone() -> None:
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    task = asyncio.ensure_future(_thread.call(slow))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    release.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _thread.call(lambda: "next") == "next"


async def test_blocking_calls_from_other_threads_and_inline_on_the_hsm_thread() -> None:
    def nested() -> bool:
        return _thread.call_blocking(_thread.on_hsm_thread)

    assert await asyncio.to_thread(_thread.call_blocking, _thread.on_hsm_thread)
    assert await _thread.call(nested)
    assert not _thread.on_hsm_thread()


async def test_an_answer_is_not_held_back_behind_the_calls_queued_after_it() -> None:
    """With a slow (network) HSM, a finished call's caller gets its answer while later calls still run."""
    release = threading.Event()

    def slow() -> str:
        release.wait(10)
        return "slow"

    first = _thread.call(lambda: "first")
    second = _thread.call(slow)
    try:
        assert await asyncio.wait_for(first, 5) == "first"
        assert not second.done()
    finally:
        release.set()
    assert await second == "slow"
