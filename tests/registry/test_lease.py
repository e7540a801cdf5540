"""The lease that lets one instance of several publish events: one holder, taken over when the holder is gone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from jsd.registry import create_engine
from jsd.registry.lease import lease_for


async def test_one_holder_at_a_time_and_a_released_lease_is_taken(database: Any) -> None:
    first, second = create_engine(database.url), create_engine(database.url)
    try:
        a, b = lease_for(first, "events"), lease_for(second, "events")
        assert await a.acquire()
        assert await a.acquire()  # already ours
        assert not await b.acquire()
        assert await a.held() and not await b.held()
        other = lease_for(second, "another-name")
        assert await other.acquire()  # leases of other names are independent
        await a.release()
        assert not await a.held()
        assert await b.acquire()
        assert not await a.acquire()
        await b.release()
        await other.release()
    finally:
        await first.dispose()
        await second.dispose()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_holder_whose_session_ends_loses_the_lease_to_the_next(database: Any) -> None:
    """PostgreSQL (a session that ends); on SQLite the kernel drops the flock of a process that dies."""
    url: str = database.url
    schema = url.split("search_path=", 1)[1]
    first, second = create_engine(url), create_engine(url)
    try:
        a, b = lease_for(first, "events"), lease_for(second, "events")
        assert await a.acquire() and not await b.acquire()
        admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        try:
            ended = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = $1 AND objid::bigint = (hashtext($2) & 4294967295)",
                0x6A7364,
                f"{schema}:events",
            )
        finally:
            await admin.close()
        assert len(ended) == 1
        deadline = time.monotonic() + 5  # the server releases it as the session ends: no timeout of ours
        while not await b.acquire():
            assert time.monotonic() < deadline, "the lease was not released with its session"
            await asyncio.sleep(0.02)
        assert not await a.held()
        assert not await a.acquire()
        await b.release()
    finally:
        await first.dispose()
        await second.dispose()
