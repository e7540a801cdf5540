"""PostgreSQL's `command_timeout`: a statement without an answer in time fails the call as `Unavailable`-worthy,
its connection is dropped at once (never pooled again), and the next call works on a fresh one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url, text

from bench.tcp_relay import Relay
from jsd.registry import NewDevice, Registry, Unavailable, is_unavailable, migrate
from jsd.registry.errors import is_timeout

TIMEOUT = 1.0
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


async def test_a_statement_across_a_silent_partition_fails_in_time_and_its_connection_is_dropped(
    database: Any,
) -> None:
    """The path to the server drops every byte (a relay holds them back; no socket closes): the call fails
    after the timeout, without a further wait for the cancellation the server cannot confirm, and the
    connection is not pooled again: once the path heals, the next call runs on a new session."""
    url = make_url(database.url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    await relay.start()
    try:
        engine = database.engine(command_timeout=TIMEOUT, url=url.set(host="127.0.0.1", port=relay.port))
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        relay.freeze()
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        took = time.monotonic() - started
        relay.thaw()
        assert TIMEOUT <= took < TIMEOUT + 0.5, took
        assert is_timeout(caught.value) and is_unavailable(caught.value)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar() != pid
    finally:
        relay.cut()


async def test_no_timeout_by_default_nor_with_zero(database: Any) -> None:
    for engine in (database.engine(), database.engine(command_timeout=0)):
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_sleep(0.7), 1"))).one()[1] == 1


async def test_hot_path_calls_behind_a_timed_out_one_fail_with_it_and_none_is_retried(database: Any) -> None:
    """Reads queued behind a read that timed out fail with it, about one timeout after the first was sent,
    rather than one timeout each; once the table is free again a read works on a new connection."""
    engine = database.engine(command_timeout=TIMEOUT)
    await migrate(engine)
    registry = Registry(engine)
    eui = bytes.fromhex("0080000005000001")
    await registry.add_device(NewDevice(eui, bytes(8), "1.0.3", "default", b"\x01" * 24))
    assert await registry.get_device(eui) is not None
    schema = database.url.split("search_path=", 1)[1]
    locker = await asyncpg.connect(ADMIN_DSN)
    try:
        async with locker.transaction():
            await locker.execute(f'LOCK TABLE "{schema}".device_nonces IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            first = asyncio.ensure_future(registry.get_device(eui))
            await asyncio.sleep(0.1)
            queued = [asyncio.ensure_future(registry.get_device(eui)) for _ in range(4)]
            results = await asyncio.gather(first, *queued, return_exceptions=True)
            took = time.monotonic() - started
    finally:
        await locker.close()
    assert all(isinstance(r, Unavailable) and is_timeout(r) for r in results), results
    assert TIMEOUT <= took < TIMEOUT + 0.5, took
    assert await registry.get_device(eui) is not None
