"""SQLite specifics that make several worker processes safe on one file."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from jsd.registry import NewDevice, NonceState, Registry, create_engine, migrate, read_only
from jsd.registry.engine import SQLITE_BUSY_TIMEOUT_MS


async def test_a_migrated_database_uses_wal_and_connections_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
    finally:
        await engine.dispose()

    assert (journal, foreign_keys, busy) == ("wal", 1, SQLITE_BUSY_TIMEOUT_MS)
    assert synchronous == 2  # FULL: every commit is fsynced, so a committed JoinNonce survives a power loss


async def test_registry_writers_queue_on_the_writer_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate(engine)
        registry = Registry(engine)
        await registry.add_device(NewDevice(bytes(8), bytes(8), "1.0.3", "default", b"\x01" * 24))
        await registry.commit_join(bytes(8), 0, NonceState(0, 1, 1, (1,), None, None), None)
        held = os.open(f"{path}-writer.lock", os.O_RDWR)  # another process's writer, as far as flock knows
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            commit = asyncio.create_task(
                registry.commit_join(bytes(8), 1, NonceState(1, 2, 2, (1, 2), None, None), None)
            )
            await asyncio.sleep(0.3)
            assert not commit.done()
            fcntl.flock(held, fcntl.LOCK_UN)
            await asyncio.wait_for(commit, 10)
        finally:
            os.close(held)
        device = await registry.get_device(bytes(8))
        assert device is not None and device.nonces.join_nonce == 2
    finally:
        await engine.dispose()


async def test_a_second_writer_waits_for_the_first_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    first, second = create_engine(url), create_engine(url)
    try:
        async with first.begin() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))

        async def increment(engine_index: int) -> None:
            engine = (first, second)[engine_index % 2]
            async with engine.begin() as conn:
                n = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0.001)
                await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

        await asyncio.gather(*(increment(i) for i in range(20)))

        async with read_only(first).connect() as conn:
            assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == 20
    finally:
        await first.dispose()
        await second.dispose()


def test_the_registry_imports_no_upper_layer() -> None:
    probe = (
        "import sys, jsd.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'aiohttp', 'pkcs11'} "
        "or m.startswith(('jsd.hsm', 'jsd.join', 'jsd.lbi', 'jsd.api'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"
