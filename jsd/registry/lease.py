"""Leases: one holder at a time among every daemon instance sharing the database, taken over when it dies.

Several instances on one PostgreSQL database must not all drain the event outbox (each event would be
published once per instance) nor all answer MQTT commands. The lease is a PostgreSQL session-level advisory
lock held on a connection of its own: the server releases it the moment that session ends, so a holder that
crashes, is killed or loses its network hands the lease over without any timeout of ours. TCP keepalives on
the session bound how long a host that vanished without closing its socket keeps it (about 25 s). The lock
key is derived from the schema, so deployments sharing a database in different schemas do not contend.

On SQLite the lease is an exclusive `flock` on `<database>-<name>.lock`: processes sharing the file are on one
host, and the kernel releases the lock of a process that dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jsd.registry.engine import read_only

__all__ = ["Lease", "lease_for"]

log = logging.getLogger("jsd.registry")

# First half of the two-int advisory lock key: "jsd" in ASCII, so our locks are recognisable in pg_locks.
_LOCK_CLASS = 0x6A7364
_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


class Lease:
    """Try to take the lease, check that it is still held, give it back."""

    async def acquire(self) -> bool:
        """True if this process holds the lease now (taken now or before)."""
        raise NotImplementedError

    async def held(self) -> bool:
        """Whether the lease is still ours; False once its session (or lock file) is gone."""
        raise NotImplementedError

    async def release(self) -> None:
        """Give the lease up (idempotent)."""
        raise NotImplementedError


def lease_for(engine: AsyncEngine, name: str) -> Lease:
    """The lease called `name` on the engine's database."""
    if engine.dialect.name == "postgresql":
        return _AdvisoryLease(engine, name)
    database = make_url(str(engine.url)).database
    return _FileLease(f"{database}-{name}.lock" if database and database != ":memory:" else None)


class _AdvisoryLease(Lease):
    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self._engine = read_only(engine)
        self._name = name
        self._conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        if self._conn is not None:
            return await self.held()
        conn = await self._engine.connect()
        try:
            for setting, value in _KEEPALIVES.items():
                await conn.execute(text(f"SET {setting} = {value}"))
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_lock(:cls, hashtext(current_schema() || ':' || :name))"),
                    {"cls": _LOCK_CLASS, "name": self._name},
                )
            ).scalar()
        except BaseException:
            await _drop(conn)
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure of the session means the lock is gone with it
            log.warning("lease %r lost with its database session: %s", self._name, type(exc).__name__)
            await self.release()
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _drop(conn)  # ending the session releases the lock; the connection is not reused


async def _drop(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


class _FileLease(Lease):
    def __init__(self, path: str | None) -> None:
        self._path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        if self._path is None or self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._path is None or self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self, _close: Any = os.close) -> None:
        if self._fd is not None:
            _close(self._fd)
