"""What both backends of the hot path share: the call and statement types, the held connection, group
execution and the refusal helpers. The design and its measurements are in `jsd.registry.hotpath`."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import ClauseElement, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from jsd.registry.errors import NonceConflict, NotFound, RegistryError, Unavailable, is_timeout, is_unavailable

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


class Writes:
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

    def __init__(self, engine: AsyncEngine, writes: Writes) -> None:
        self._writer = writes
        self._writes: Batcher[JoinWrite, None] = Batcher(engine, writes, _device_key)

    @property
    def stats(self) -> WriteStats:
        return self._writer.stats

    async def read_device(self, eui: str) -> Sequence[Any] | None:
        """The row of `get_device` (its columns, in order), or None."""
        raise NotImplementedError

    def commit(self, write: JoinWrite) -> Awaitable[None]:
        """Resolves once the transaction holding `write` has committed; raises this call's own refusal."""
        return self._writes.submit(write)


DISPOSED = "the database engine was disposed (the daemon is stopping)"


class HeldConnection:
    """One pooled connection, checked out on first use and kept: a checkout costs more than a whole join.

    The Registry has no close of its own, so `engine.dispose()` closes it, through an event listener that
    refers to the connection only (not to the Registry, which may be dropped earlier). It is invalidated
    rather than checked in, as it may carry settings of ours. After the dispose it takes no new connection.
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
            if self._slot.disposed:
                raise Unavailable(DISPOSED)
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
            if self._slot.disposed:  # the engine was disposed meanwhile: nothing would ever close this one
                raise Unavailable(DISPOSED)
        except BaseException:
            await conn.invalidate()
            await conn.close()
            raise
        self._slot.conn, self._slot.driver = conn, driver

    async def discard(self, *, abort: bool = False) -> None:
        """Close the connection after a failure; the next call takes a fresh one.

        `abort`: a statement timed out on it, so it is terminated at once; a graceful close would first wait
        for the server to confirm the statement's cancellation, which across a partition never comes.
        """
        conn, driver, self._slot.conn, self._slot.driver = self._slot.conn, self._slot.driver, None, None
        terminate = getattr(driver, "terminate", None)
        if abort and callable(terminate):
            terminate()
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
        self.disposed = False

    def close(self, _engine: Engine) -> None:
        # Runs inside Engine.dispose, in its greenlet for an async engine, so the driver closes gracefully.
        # A call still running then (a batch's retry, a queued write) must not check out a connection that
        # the disposed engine's owner will never close: it fails as Unavailable instead.
        self.disposed = True
        conn, self.conn, self.driver = self.conn, None, None
        if conn is not None and conn.sync_connection is not None:
            conn.sync_connection.invalidate()
            conn.sync_connection.close()


class Batcher(Generic[Item, Result]):
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
        self._held = HeldConnection(engine, prepare)
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
            raise failure(exc) from exc

    async def _run_once_more_if_safe(self, items: list[Item], *, again: bool = True) -> list[Outcome]:
        """Run a batch on the held connection; replace the connection after a failure, and when the batch
        only reads and the connection broke, run it again (`again`, once) on the fresh one.

        A batch that timed out (connecting, or its statement) is not run again (the wait would double), and
        the calls queued meanwhile fail with it: they have waited as long already, and the database just did
        not answer.
        """
        try:
            driver = await self._held.open()
        except Exception as exc:
            self._fail_queued_after_timeout(exc)
            raise
        try:
            return await self._run(driver, items)
        except Exception as exc:
            timed_out = is_timeout(exc)
            broke = _closed(driver) or is_unavailable(exc)
            await self._held.discard(abort=timed_out)
            self._fail_queued_after_timeout(exc)
            if timed_out or not (again and self._rerun and broke):
                raise
        return await self._run_once_more_if_safe(items, again=False)

    def _fail_queued_after_timeout(self, exc: Exception) -> None:
        if is_timeout(exc):
            _fail(self._queue, exc)
            self._queue.clear()

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


def failure(exc: Exception) -> RegistryError:
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
            future.set_exception(failure(exc))


def _device_key(write: JoinWrite) -> str:
    return write.eui


def refusal(item: JoinWrite, stored: Sequence[Any] | None) -> RegistryError | ValueError:
    """Why a guarded UPDATE matched no row, from the row as it is now."""
    if stored is None:
        return NotFound(f"device {item.eui} not found")
    version, join_nonce = stored[0], stored[1]
    if version != item.expected:
        return NonceConflict(f"device {item.eui}: nonce state is at version {version}, not {item.expected}")
    return ValueError(f"device {item.eui}: JoinNonce {item.join_nonce} is not above the stored {join_nonce}")


def duplicate_session(item: JoinWrite, exc: Exception) -> RegistryError:
    error = RegistryError(f"device {item.eui}: SessionKeyID already in use; nothing was written")
    error.__cause__ = exc
    return error


def compiled(
    engine: AsyncEngine, statement: ClauseElement, keys: Sequence[str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """SQL text for the engine's dialect and the names of its positional parameters, in order."""
    compiled = statement.compile(dialect=engine.dialect, column_keys=list(keys) if keys else None)
    return compiled.string, tuple(cast(SQLCompiler, compiled).positiontup or ())
