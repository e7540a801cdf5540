"""The SQLite hot path: point reads on the event loop thread, write batches on the writer's own thread
under a kernel `flock` (why: `jsd.registry.hotpath`)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.engine import SQLITE_BUSY_TIMEOUT_MS
from jsd.registry.hotpath.common import (
    HeldConnection,
    HotPath,
    HotStatements,
    JoinWrite,
    Outcome,
    Writes,
    compiled,
    duplicate_session,
    failure,
    refusal,
)


class SqliteHotPath(HotPath):
    """Reads on the event loop thread; each write batch is one call on the writer connection's thread."""

    def __init__(self, engine: AsyncEngine, statements: HotStatements) -> None:
        super().__init__(engine, _SqliteWrites(engine, statements))
        self._get_device = compiled(engine, statements.get_device)[0]
        self._reader = HeldConnection(engine, _never_wait)

    async def read_device(self, eui: str) -> Sequence[Any] | None:
        deadline = None
        while True:
            try:
                driver = self._reader.driver or await self._reader.open()
                rows = _sqlite_connection(driver).execute(self._get_device, (eui,)).fetchall()
                return rows[0] if rows else None
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    await self._reader.discard()
                    raise failure(exc) from exc
                deadline = deadline or time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
                if time.monotonic() > deadline:
                    raise failure(exc) from exc
            except Exception as exc:
                await self._reader.discard()
                raise failure(exc) from exc
            await asyncio.sleep(0.001)


class _SqliteWrites(Writes):
    """A batch is one call on the writer connection's own thread: lock, BEGIN IMMEDIATE, statements, COMMIT.

    It compiles the statements it runs itself; they are only read on that thread.
    """

    def __init__(self, engine: AsyncEngine, statements: HotStatements) -> None:
        super().__init__()
        self._update, self._update_order = compiled(engine, statements.update_nonces)
        self._nonce_check = compiled(engine, statements.nonce_check)[0]
        self._insert_session = compiled(engine, statements.insert_session, statements.session_columns)[0]
        self._prune = compiled(engine, statements.prune_sessions)[0]
        self._insert_event = compiled(engine, statements.insert_event, statements.event_columns)[0]
        self._insert_outbox = compiled(engine, statements.insert_outbox, ("event_id",))[0]
        self._lock: _WriterLock | None = None

    async def __call__(self, driver: Any, writes: list[JoinWrite]) -> list[Outcome]:
        if self._lock is None:
            self._lock = _WriterLock(await _on_sqlite_thread(driver, _lock_path))
        outcomes: list[Outcome]
        outcomes, transactions = await _on_sqlite_thread(driver, self._write, self._lock, writes)
        self.count(len(writes), transactions)
        return outcomes

    def _write(self, db: sqlite3.Connection, lock: _WriterLock, writes: list[JoinWrite]) -> tuple[list[Outcome], int]:
        """Write a batch in one transaction; a duplicate SessionKeyID drops that call and redoes the rest."""
        outcomes: list[Outcome] = [None] * len(writes)
        pending = list(range(len(writes)))
        with lock:
            while pending:
                db.execute("BEGIN IMMEDIATE")
                try:
                    duplicate = self._apply(db, writes, pending, outcomes)
                    if duplicate is None:
                        db.commit()
                        return outcomes, 1
                except BaseException:
                    db.rollback()
                    raise
                db.rollback()
                index, exc = duplicate
                outcomes[index] = duplicate_session(writes[index], exc)
                pending.remove(index)
        return outcomes, 0

    def _apply(
        self, db: sqlite3.Connection, writes: list[JoinWrite], pending: list[int], outcomes: list[Outcome]
    ) -> tuple[int, sqlite3.IntegrityError] | None:
        """The statements of the pending calls; returns the call whose session key clashed, if one did."""
        for index in pending:
            w = writes[index]
            params = {
                "p_version": w.expected + 1,
                "p_join_nonce": w.join_nonce,
                "p_last_dev_nonce": w.last_dev_nonce,
                "p_used_dev_nonces": w.used_dev_nonces,
                "p_rj_count0": w.rj_count0,
                "p_rj_count1": w.rj_count1,
                "p_dev_eui": w.eui,
                "p_expected": w.expected,
            }
            if db.execute(self._update, [params[name] for name in self._update_order]).rowcount != 1:
                stored = db.execute(self._nonce_check, (w.eui,)).fetchall()
                outcomes[index] = refusal(w, stored[0] if stored else None)
                continue
            outcomes[index] = None
            if w.event_id is not None:
                db.execute(self._insert_event, (w.event_id, w.event_type, w.event_account, w.eui, w.event_data))
                db.execute(self._insert_outbox, (w.event_id,))
            if w.session_key_id is None:
                continue
            try:
                db.execute(
                    self._insert_session,
                    (w.session_key_id, w.eui, w.hsm_group, w.app_s_key_blob, w.join_nonce, w.dev_nonce),
                )
            except sqlite3.IntegrityError as exc:
                return index, exc
            if w.prune_upto is not None:
                db.execute(self._prune, (w.eui, w.prune_upto))
        return None


def _sqlite_connection(driver: Any) -> sqlite3.Connection:
    """The sqlite3 connection inside an aiosqlite one (it has no public accessor)."""
    return cast(sqlite3.Connection, driver._conn)


def _on_sqlite_thread(driver: Any, function: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Run `function(sqlite3_connection, *args)` on the aiosqlite connection's thread: one queued call.

    aiosqlite has no public way to do this; SQLAlchemy's aiosqlite dialect uses the same queue itself.
    """
    return cast(Awaitable[Any], driver._execute(function, driver._conn, *args))


async def _never_wait(driver: Any) -> None:
    """The reader runs on the event loop thread, so SQLite's busy handler must never sleep there."""
    await _on_sqlite_thread(driver, lambda db: db.execute("PRAGMA busy_timeout = 0"))


def _lock_path(db: sqlite3.Connection) -> str | None:
    for _seq, name, filename in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and filename:
            return f"{filename}-writer.lock"
    return None


class _WriterLock:
    """Exclusive `flock` on `<database>-writer.lock`, taken around each write transaction by every writer.

    Waiters queue in the kernel and the next one is woken the moment the holder unlocks. The file stays
    open while the Registry lives (closing it is what releases a crashed holder's lock). A database without
    a file (in memory) has a single connection anyway and needs none.
    """

    def __init__(self, path: str | None) -> None:
        self._fd: int | None = None
        if path is not None:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            weakref.finalize(self, os.close, self._fd)

    def __enter__(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
