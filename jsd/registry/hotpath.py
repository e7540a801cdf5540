"""The join hot path: `get_device` and `commit_join`, on the driver connection, with group commit.

Why not plain SQLAlchemy here. The daemon's target (1,000 joins/s on 2 cores with 2 workers, HTTP and HSM
already ≈1 ms CPU per join) leaves ≲0.3 ms CPU per join for the registry. Measured on the project machine,
CPU per `get_device`: Core through the pool ≈1.1 ms (SQLite) / 0.55 ms (PostgreSQL); Core on a connection
kept checked out ≈0.7 / 0.26 ms; an async pool checkout plus return alone ≈0.35 ms; the driver connection,
kept, with one thread hop or one round trip ≈0.04–0.1 ms. (Every aiosqlite call is a hop to its thread and
Core makes several per statement: cursor, execute, fetch, close, reset on return.) So the two hot calls use
the raw driver connection, taken from SQLAlchemy's pool (`get_raw_connection().driver_connection`) and kept;
their SQL is compiled once from the Core statements of `registry.py`. Only PostgreSQL's batch write is
hand-written, to make a whole batch one statement and one round trip.

Group commit (both backends). A durable commit costs an fsync (SQLite, synchronous=FULL) or a WAL flush
(PostgreSQL), and SQLite commits are serialised across processes. A `commit_join` arriving while none is in
flight is written at once, alone; calls arriving meanwhile queue up, and one task per Registry writes all of
them (in order, at most one per device, `MAX_BATCH`) in ONE transaction, each with its own guarded UPDATE. A
call whose guard fails gets its own NotFound/NonceConflict/ValueError while the others commit (the reason is
read inside the transaction on SQLite, right after it on PostgreSQL); a session key is inserted only if its
own call's UPDATE matched; a duplicate SessionKeyID fails that call alone (the transaction is rolled back
and redone without it); any other failure fails every call of the transaction and writes nothing. A call
returns only after the COMMIT of its transaction returned.

Reads. On PostgreSQL, queued `get_device` calls are batched the same way (one `= ANY(...)` round trip). On
SQLite a point read is a ≈20 µs in-process B-tree lookup, several times cheaper than the thread hop, so it
runs on the event loop thread on a connection of its own whose busy timeout is 0: in WAL mode a read does
not wait for writers, and in the rare case SQLite reports busy (recovery after a crash) the call retries
with asyncio sleeps instead of blocking the loop. Writes always run on the connection's own thread, so an
fsync never blocks the loop.

SQLite across processes. A writer takes the write lock with BEGIN IMMEDIATE, and SQLite's busy handler makes a
waiting writer sleep 1, 2, 5, 10… ms while the holder may keep committing: awful tail latency between two
workers. Python's sqlite3 cannot install a busy handler of its own, so the choices were that handler, a
poll (busy_timeout 0 and a 0.2 ms sleep between BEGIN IMMEDIATE attempts, on the driver thread) or a lock
the kernel hands over. Measured with `bench/registry_ops.py` (2 workers, 500 joins/s each, two runs each):
p99 19–39 ms (max 62–83) with the busy handler, 9–121 ms (max 18–181) polling, 7–10 ms (max 21–29) with
the lock. So every writer first takes an exclusive `flock` on `<database>-writer.lock` on its driver thread:
the kernel wakes the next writer the moment the holder unlocks, nobody polls, and the SQLite lock is then
free. The busy timeout still bounds waits behind writers that do not take it (CLI, migrations); the flock
wait itself is not bounded, but it is held only across one transaction and a crash releases it.

The connections are checked out on first use and kept (one for reads, one for writes); `engine.dispose()`
closes them, and a batch that fails for a reason other than its own calls replaces its connection.

Lost connections (PostgreSQL restarted, a backend terminated, a network cut). A kept connection found closed
before use is replaced first, so an idle worker never fails on a connection that died meanwhile. A read that
fails because its connection broke is run once more on a fresh one: reads change nothing. A write is never
run again: if the connection broke during its statement, the COMMIT may or may not have happened, so its
callers get `Unavailable` (the JoinNonce stays safe either way: it only ever grows, and a retried join reads
the state again). While the database cannot be reached, every call fails with `Unavailable` at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ClauseElement, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from jsd.registry.engine import SQLITE_BUSY_TIMEOUT_MS
from jsd.registry.errors import NonceConflict, NotFound, RegistryError, Unavailable, is_unavailable

__all__ = ["MAX_BATCH", "HotPath", "HotStatements", "JoinWrite", "WriteStats", "hot_path_for"]

MAX_BATCH = 256
"""Most calls written in one transaction (or read in one round trip); more wait for the next one."""

Item = TypeVar("Item")
Result = TypeVar("Result")
Outcome = Any  # a call's result, or the exception instance for that call alone
Waiter = tuple[Any, "asyncio.Future[Any]"]


@dataclass(frozen=True, slots=True)
class JoinWrite:
    """One validated `commit_join` call, in storage form."""

    eui: str
    expected: int
    join_nonce: int
    last_dev_nonce: int | None
    used_dev_nonces: bytes
    rj_count0: int | None
    rj_count1: int | None
    session_key_id: str | None
    hsm_group: str | None
    app_s_key_blob: bytes | None
    dev_nonce: int | None
    prune_upto: int | None
    event_id: str | None = None
    event_type: str | None = None
    event_account: str | None = None
    event_data: str | None = None


@dataclass(frozen=True)
class WriteStats:
    """What group commit did so far: `calls` commit_join calls written in `transactions` transactions."""

    calls: int = 0
    transactions: int = 0
    largest_batch: int = 0


@dataclass(frozen=True)
class HotStatements:
    """The Core statements of the hot path, compiled for the engine's dialect by `hot_path_for`."""

    get_device: ClauseElement
    get_devices_any: ClauseElement
    nonce_check: ClauseElement
    update_nonces: ClauseElement
    insert_session: ClauseElement
    session_columns: tuple[str, ...]
    prune_sessions: ClauseElement
    insert_event: ClauseElement
    event_columns: tuple[str, ...]
    insert_outbox: ClauseElement


class _Writes:
    """Writes one batch of join commits on a driver connection (per dialect), and counts what it did.

    It holds no reference to its HotPath, so that dropping a Registry frees its connections at once.
    """

    def __init__(self) -> None:
        self.stats = WriteStats()

    async def __call__(self, driver: Any, writes: list[JoinWrite]) -> list[Outcome]:
        raise NotImplementedError

    def count(self, calls: int, transactions: int) -> None:
        s = self.stats
        largest = max(s.largest_batch, calls) if transactions else s.largest_batch
        self.stats = WriteStats(s.calls + calls, s.transactions + transactions, largest)


class HotPath:
    """`get_device` rows and group-committed `commit_join` writes for one Registry."""

    def __init__(self, engine: AsyncEngine, writes: _Writes) -> None:
        self._writer = writes
        self._writes: _Batcher[JoinWrite, None] = _Batcher(engine, writes, _device_key)

    @property
    def stats(self) -> WriteStats:
        return self._writer.stats

    async def read_device(self, eui: str) -> Sequence[Any] | None:
        """The row of `get_device` (its columns, in order), or None."""
        raise NotImplementedError

    def commit(self, write: JoinWrite) -> Awaitable[None]:
        """Resolves once the transaction holding `write` has committed; raises this call's own refusal."""
        return self._writes.submit(write)


def hot_path_for(engine: AsyncEngine, statements: HotStatements) -> HotPath:
    """The hot path for the engine's driver; aiosqlite and asyncpg are the two supported."""
    driver = engine.dialect.driver
    if driver == "aiosqlite":
        return _SqliteHotPath(engine, statements)
    if driver == "asyncpg":
        return _PostgresHotPath(engine, statements)
    raise ValueError(f"unsupported database driver {driver!r}: use sqlite+aiosqlite or postgresql+asyncpg")


class _HeldConnection:
    """One pooled connection, checked out on first use and kept: a checkout costs more than a whole join.

    The Registry has no close of its own, so `engine.dispose()` closes it, through an event listener that
    refers to the connection only (not to the Registry, which may be dropped earlier). It is invalidated
    rather than checked in, as it may carry settings of ours.
    """

    def __init__(self, engine: AsyncEngine, prepare: Callable[[Any], Awaitable[None]] | None = None) -> None:
        self._engine = engine
        self._prepare = prepare
        self._slot = _Slot()
        self._opening: asyncio.Future[None] | None = None
        event.listen(engine.sync_engine, "engine_disposed", self._slot.close)

    @property
    def driver(self) -> Any:
        """The driver's connection object (aiosqlite or asyncpg) if one is held, else None."""
        return self._slot.driver

    async def open(self) -> Any:
        """The driver's connection object, checked out now if none is held (once for concurrent callers).

        A held connection that the server or the network closed meanwhile is replaced first.
        """
        if self._slot.driver is not None and _closed(self._slot.driver):
            await self.discard()
        while self._slot.driver is None:
            if self._opening is not None:
                await asyncio.shield(self._opening)
                continue
            opening = self._opening = asyncio.get_running_loop().create_future()
            try:
                await self._checkout()
            finally:
                self._opening = None
                if not opening.done():
                    opening.set_result(None)
        return self._slot.driver

    async def _checkout(self) -> None:
        conn = await self._engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if self._prepare is not None:
                await self._prepare(driver)
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        self._slot.conn, self._slot.driver = conn, driver

    async def discard(self) -> None:
        """Close the connection after a failure; the next call takes a fresh one."""
        conn, self._slot.conn, self._slot.driver = self._slot.conn, None, None
        if conn is not None:
            await conn.invalidate()
            await conn.close()


def _closed(driver: Any) -> bool:
    """Whether a driver connection is known to be closed (asyncpg tells; aiosqlite files do not go away)."""
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


class _Slot:
    """The held connection, apart from its holder so that closing it needs no reference to the holder."""

    def __init__(self) -> None:
        self.conn: AsyncConnection | None = None
        self.driver: Any = None

    def close(self, _engine: Engine) -> None:
        # Runs inside Engine.dispose, in its greenlet for an async engine, so the driver closes gracefully.
        conn, self.conn, self.driver = self.conn, None, None
        if conn is not None and conn.sync_connection is not None:
            conn.sync_connection.invalidate()
            conn.sync_connection.close()


class _Batcher(Generic[Item, Result]):
    """Group execution: a call made while none is running runs at once, alone; calls made meanwhile queue
    up and one task runs them in batches (one `run` each) until the queue is empty."""

    def __init__(
        self,
        engine: AsyncEngine,
        run: Callable[[Any, list[Item]], Awaitable[list[Outcome]]],
        key: Callable[[Item], str] | None,
        prepare: Callable[[Any], Awaitable[None]] | None = None,
        *,
        rerun: bool = False,
    ) -> None:
        """`rerun`: `run` changes nothing, so a batch whose connection broke is run once more on a fresh one."""
        self._held = _HeldConnection(engine, prepare)
        self._run = run
        self._rerun = rerun
        self._key = key
        self._busy = False
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        if self._busy:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            return await future
        self._busy = True
        try:
            outcome = await self._run_alone(item)
        finally:
            if self._queue:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._busy = False
        if isinstance(outcome, BaseException):
            raise outcome
        return cast(Result, outcome)

    async def _run_alone(self, item: Item) -> Outcome:
        try:
            return (await self._run_once_more_if_safe([item]))[0]
        except Exception as exc:
            raise _failure(exc) from exc

    async def _run_once_more_if_safe(self, items: list[Item]) -> list[Outcome]:
        """Run a batch on the held connection; replace the connection after a failure, and when the batch
        only reads and the connection broke, run it again on the fresh one."""
        driver = await self._held.open()
        try:
            return await self._run(driver, items)
        except Exception as exc:
            broke = _closed(driver) or is_unavailable(exc)
            await self._held.discard()
            if not (self._rerun and broke):
                raise
        return await self._run(await self._held.open(), items)

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        """The next batch: queued calls in order, skipping abandoned ones, at most one per key."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        later: list[tuple[Item, asyncio.Future[Result]]] = []
        keys: set[str] = set()
        while self._queue and len(batch) < MAX_BATCH:
            entry = self._queue.popleft()
            if entry[1].done():
                continue
            if self._key is not None:
                key = self._key(entry[0])
                if key in keys:
                    later.append(entry)
                    continue
                keys.add(key)
            batch.append(entry)
        self._queue.extendleft(reversed(later))
        return batch

    async def _drain(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while batch := self._take():
                try:
                    outcomes = await self._run_once_more_if_safe([item for item, _ in batch])
                except Exception as exc:
                    _fail(batch, exc)
                    batch = []
                    await self._held.discard()
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except Exception as exc:
            _fail([*batch, *self._queue], exc)
            self._queue.clear()
        except BaseException:
            for _, future in (*batch, *self._queue):
                future.cancel()
            self._queue.clear()
            raise
        finally:
            self._busy = False
            self._task = None


def _failure(exc: Exception) -> RegistryError:
    """What each caller of a batch that failed as a whole gets: its own exception, caused by the failure.

    `Unavailable` when the database could not be reached or the connection broke (the outcome of a write
    is then unknown), so the transport answers "try again" rather than reporting a bug.
    """
    kind = Unavailable if is_unavailable(exc) else RegistryError
    error = kind(f"the registry call failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _fail(entries: Sequence[Waiter], exc: Exception) -> None:
    for _, future in entries:
        if not future.done():
            future.set_exception(_failure(exc))


def _device_key(write: JoinWrite) -> str:
    return write.eui


def _refusal(item: JoinWrite, stored: Sequence[Any] | None) -> RegistryError | ValueError:
    """Why a guarded UPDATE matched no row, from the row as it is now."""
    if stored is None:
        return NotFound(f"device {item.eui} not found")
    version, join_nonce = stored[0], stored[1]
    if version != item.expected:
        return NonceConflict(f"device {item.eui}: nonce state is at version {version}, not {item.expected}")
    return ValueError(f"device {item.eui}: JoinNonce {item.join_nonce} is not above the stored {join_nonce}")


def _duplicate_session(item: JoinWrite, exc: Exception) -> RegistryError:
    error = RegistryError(f"device {item.eui}: SessionKeyID already in use; nothing was written")
    error.__cause__ = exc
    return error


def _compiled(
    engine: AsyncEngine, statement: ClauseElement, keys: Sequence[str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """SQL text for the engine's dialect and the names of its positional parameters, in order."""
    compiled = statement.compile(dialect=engine.dialect, column_keys=list(keys) if keys else None)
    return compiled.string, tuple(cast(SQLCompiler, compiled).positiontup or ())


# -- SQLite ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SqliteSql:
    get_device: str
    nonce_check: str
    update: str
    update_order: tuple[str, ...]
    insert_session: str
    prune: str
    insert_event: str
    insert_outbox: str


class _SqliteHotPath(HotPath):
    """Reads on the event loop thread; each write batch is one call on the writer connection's thread."""

    def __init__(self, engine: AsyncEngine, statements: HotStatements) -> None:
        update, update_order = _compiled(engine, statements.update_nonces)
        sql = _SqliteSql(
            get_device=_compiled(engine, statements.get_device)[0],
            nonce_check=_compiled(engine, statements.nonce_check)[0],
            update=update,
            update_order=update_order,
            insert_session=_compiled(engine, statements.insert_session, statements.session_columns)[0],
            prune=_compiled(engine, statements.prune_sessions)[0],
            insert_event=_compiled(engine, statements.insert_event, statements.event_columns)[0],
            insert_outbox=_compiled(engine, statements.insert_outbox, ("event_id",))[0],
        )
        super().__init__(engine, _SqliteWrites(sql))
        self._get_device = sql.get_device
        self._reader = _HeldConnection(engine, _never_wait)

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
                    raise _failure(exc) from exc
                deadline = deadline or time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
                if time.monotonic() > deadline:
                    raise _failure(exc) from exc
            except Exception as exc:
                await self._reader.discard()
                raise _failure(exc) from exc
            await asyncio.sleep(0.001)



class _SqliteWrites(_Writes):
    """A batch is one call on the writer connection's own thread: lock, BEGIN IMMEDIATE, statements, COMMIT."""

    def __init__(self, sql: _SqliteSql) -> None:
        super().__init__()
        self._sql = sql
        self._lock: _WriterLock | None = None

    async def __call__(self, driver: Any, writes: list[JoinWrite]) -> list[Outcome]:
        if self._lock is None:
            self._lock = _WriterLock(await _on_sqlite_thread(driver, _lock_path))
        outcomes: list[Outcome]
        outcomes, transactions = await _on_sqlite_thread(driver, _sqlite_write, self._sql, self._lock, writes)
        self.count(len(writes), transactions)
        return outcomes


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


def _sqlite_write(
    db: sqlite3.Connection, sql: _SqliteSql, lock: _WriterLock, writes: list[JoinWrite]
) -> tuple[list[Outcome], int]:
    """Write a batch in one transaction; a duplicate SessionKeyID drops that call and redoes the rest."""
    outcomes: list[Outcome] = [None] * len(writes)
    pending = list(range(len(writes)))
    with lock:
        while pending:
            db.execute("BEGIN IMMEDIATE")
            try:
                duplicate = _sqlite_apply(db, sql, writes, pending, outcomes)
                if duplicate is None:
                    db.commit()
                    return outcomes, 1
            except BaseException:
                db.rollback()
                raise
            db.rollback()
            index, exc = duplicate
            outcomes[index] = _duplicate_session(writes[index], exc)
            pending.remove(index)
    return outcomes, 0


def _sqlite_apply(
    db: sqlite3.Connection, sql: _SqliteSql, writes: list[JoinWrite], pending: list[int], outcomes: list[Outcome]
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
        if db.execute(sql.update, [params[name] for name in sql.update_order]).rowcount != 1:
            stored = db.execute(sql.nonce_check, (w.eui,)).fetchall()
            outcomes[index] = _refusal(w, stored[0] if stored else None)
            continue
        outcomes[index] = None
        if w.event_id is not None:
            db.execute(sql.insert_event, (w.event_id, w.event_type, w.event_account, w.eui, w.event_data))
            db.execute(sql.insert_outbox, (w.event_id,))
        if w.session_key_id is None:
            continue
        try:
            db.execute(
                sql.insert_session,
                (w.session_key_id, w.eui, w.hsm_group, w.app_s_key_blob, w.join_nonce, w.dev_nonce),
            )
        except sqlite3.IntegrityError as exc:
            return index, exc
        if w.prune_upto is not None:
            db.execute(sql.prune, (w.eui, w.prune_upto))
    return None


# -- PostgreSQL --------------------------------------------------------------------------------------

# One statement, so one implicit transaction, for the whole batch: each input row keeps its own guard;
# session keys are inserted (and old ones pruned) only for the rows the UPDATE matched; the positions of
# the matched input rows come back. A batch holds each device once, so no row is updated twice.
_PG_COMMIT_BATCH = """
WITH input AS (
    SELECT * FROM unnest($1::varchar[], $2::int[], $3::int[], $4::int[], $5::bytea[], $6::int[], $7::int[],
                         $8::varchar[], $9::varchar[], $10::bytea[], $11::int[], $12::int[],
                         $13::varchar[], $14::varchar[], $15::varchar[], $16::text[])
        WITH ORDINALITY AS i(dev_eui, expected, join_nonce, last_dev_nonce, used_dev_nonces, rj_count0,
                             rj_count1, session_key_id, hsm_group, app_s_key_blob, dev_nonce, prune_upto,
                             event_id, event_type, event_account, event_data, n)
), updated AS (
    UPDATE device_nonces AS d
       SET version = i.expected + 1, join_nonce = i.join_nonce, last_dev_nonce = i.last_dev_nonce,
           used_dev_nonces = i.used_dev_nonces, rj_count0 = i.rj_count0, rj_count1 = i.rj_count1,
           updated_at = now()
      FROM input AS i
     WHERE d.dev_eui = i.dev_eui AND d.version = i.expected AND d.join_nonce < i.join_nonce
    RETURNING d.dev_eui
), inserted AS (
    INSERT INTO session_keys (session_key_id, dev_eui, hsm_group, app_s_key_blob, join_nonce, dev_nonce)
    SELECT i.session_key_id, i.dev_eui, i.hsm_group, i.app_s_key_blob, i.join_nonce, i.dev_nonce
      FROM input AS i JOIN updated AS u ON u.dev_eui = i.dev_eui
     WHERE i.session_key_id IS NOT NULL
), pruned AS (
    DELETE FROM session_keys AS s
     USING input AS i, updated AS u
     WHERE u.dev_eui = i.dev_eui AND i.prune_upto IS NOT NULL
       AND s.dev_eui = i.dev_eui AND s.join_nonce <= i.prune_upto
), evented AS (
    INSERT INTO events (event_id, type, account, dev_eui, data)
    SELECT i.event_id, i.event_type, i.event_account, i.dev_eui, i.event_data
      FROM input AS i JOIN updated AS u ON u.dev_eui = i.dev_eui
     WHERE i.event_id IS NOT NULL
    RETURNING event_id
), queued AS (
    INSERT INTO outbox (event_id) SELECT event_id FROM evented
)
SELECT i.n FROM input AS i JOIN updated AS u ON u.dev_eui = i.dev_eui
"""

_PG_NONCE_CHECK = "SELECT dev_eui, version, join_nonce FROM device_nonces WHERE dev_eui = ANY($1::varchar[])"


class _PostgresHotPath(HotPath):
    """Queued reads are one `= ANY(...)` round trip; a write batch is one statement (see `_PostgresWrites`)."""

    def __init__(self, engine: AsyncEngine, statements: HotStatements) -> None:
        super().__init__(engine, _PostgresWrites())
        self._reads: _Batcher[str, Sequence[Any] | None] = _Batcher(
            engine, _PostgresReads(_compiled(engine, statements.get_devices_any)[0]), None, rerun=True
        )

    async def read_device(self, eui: str) -> Sequence[Any] | None:
        return await self._reads.submit(eui)


class _PostgresReads:
    def __init__(self, sql: str) -> None:
        self._sql = sql

    async def __call__(self, driver: Any, euis: list[str]) -> list[Outcome]:
        rows = await driver.fetch(self._sql, euis)
        by_eui = {row[0]: row for row in rows}
        return [by_eui.get(eui) for eui in euis]


class _PostgresWrites(_Writes):
    """A batch is one round trip (its own implicit transaction), plus one to explain refused calls."""

    def __init__(self) -> None:
        super().__init__()
        from asyncpg import IntegrityConstraintViolationError  # type: ignore[import-untyped]

        self._integrity_error = IntegrityConstraintViolationError

    async def __call__(self, driver: Any, writes: list[JoinWrite]) -> list[Outcome]:
        try:
            rows = await driver.fetch(_PG_COMMIT_BATCH, *_pg_columns(writes))
        except self._integrity_error as exc:
            if len(writes) == 1:
                self.count(1, 0)
                return [_duplicate_session(writes[0], exc)]
            outcomes: list[Outcome] = []
            for write in writes:
                outcomes += await self(driver, [write])
            return outcomes
        self.count(len(writes), 1)
        applied = {row[0] - 1 for row in rows}
        outcomes = [None] * len(writes)
        refused = [i for i in range(len(writes)) if i not in applied]
        if refused:
            euis = [writes[i].eui for i in refused]
            stored = {row[0]: row[1:] for row in await driver.fetch(_PG_NONCE_CHECK, euis)}
            for i in refused:
                outcomes[i] = _refusal(writes[i], stored.get(writes[i].eui))
        return outcomes


def _pg_columns(writes: list[JoinWrite]) -> list[list[Any]]:
    return [
        [w.eui for w in writes],
        [w.expected for w in writes],
        [w.join_nonce for w in writes],
        [w.last_dev_nonce for w in writes],
        [w.used_dev_nonces for w in writes],
        [w.rj_count0 for w in writes],
        [w.rj_count1 for w in writes],
        [w.session_key_id for w in writes],
        [w.hsm_group for w in writes],
        [w.app_s_key_blob for w in writes],
        [w.dev_nonce for w in writes],
        [w.prune_upto for w in writes],
        [w.event_id for w in writes],
        [w.event_type for w in writes],
        [w.event_account for w in writes],
        [w.event_data for w in writes],
    ]
