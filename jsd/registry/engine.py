"""Engine factory: one code path for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite needs help to be safe with several worker processes sharing one file:

* WAL, so readers never wait for the writer. The mode is stored in the file, so it is switched on once,
  by `migrate()` (`enable_wal`): switching needs a lock that SQLite will not wait for, so it is retried;
* a busy timeout, so a writer waits for the lock instead of failing at once;
* synchronous=FULL, stated rather than left to the build's default: a committed JoinNonce must survive
  a power loss, so every commit is fsynced (the registry amortises that with group commit);
* `BEGIN IMMEDIATE` for every transaction that may write. A deferred transaction that reads and
  then writes cannot wait for the lock (SQLite reports SQLITE_BUSY at once, whatever the timeout);
  taking the write lock at BEGIN makes concurrent writers queue up instead.

SQLAlchemy's `begin` event emits that `BEGIN IMMEDIATE`, so it is the default for any transaction.
Each statement costs several thread hops with aiosqlite, so two views of the engine skip it:

* `read_only()`: nothing is emitted; a lone SELECT runs in SQLite's own implicit read transaction;
* `writes_first()`: for transactions whose first statement writes. The connections are opened with
  sqlite3's `isolation_level = "IMMEDIATE"`, so the driver itself issues `BEGIN IMMEDIATE` right
  before that first INSERT/UPDATE/DELETE, inside the same call. (It never does so for a SELECT, so
  a transaction that reads first must not use this view.)

On PostgreSQL a `search_path` query parameter in the URL selects the schema
(`postgresql+asyncpg://user@host/db?search_path=jsd`), so one URL string is the whole configuration.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_engine", "enable_wal", "read_only", "writes_first"]

SQLITE_BUSY_TIMEOUT_MS = 10_000

_SQLITE_EXPLICIT_BEGIN = "jsd_sqlite_explicit_begin"


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """Create an async engine for `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`.

    `options` go to SQLAlchemy's `create_async_engine` (for example `connect_args`, `pool_size`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "search_path" in parsed.query:
        parsed = _search_path_to_server_settings(parsed, options)
    engine = create_async_engine(parsed, **options)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` for single-statement reads: no write lock, no BEGIN/COMMIT round trips.

    It shares the engine's pool. Do not write through it: on PostgreSQL it autocommits each statement.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_EXPLICIT_BEGIN: False})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def writes_first(engine: AsyncEngine) -> AsyncEngine:
    """A view of `engine` for transactions whose first statement is an INSERT, UPDATE or DELETE.

    Same locking as the default, fewer driver calls on SQLite (see the module docstring); the
    engine itself elsewhere. It shares the engine's pool.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_SQLITE_EXPLICIT_BEGIN: False})
    return engine


async def enable_wal(engine: AsyncEngine) -> None:
    """Put a SQLite database in WAL mode (kept in the file); a no-op elsewhere or when already done.

    Leaving rollback-journal mode needs an exclusive lock, and SQLite reports "database is locked" at
    once instead of using the busy timeout, so a database opened by several processes at first start
    is retried here, without blocking the event loop.
    """
    if engine.dialect.name != "sqlite":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            async with read_only(engine).connect() as conn:
                mode = (await conn.exec_driver_sql("PRAGMA journal_mode = WAL")).scalar()
            if mode == "wal":
                return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
        else:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SQLite refused WAL mode (journal_mode is {mode!r})")
        await asyncio.sleep(0.02)


def _search_path_to_server_settings(url: URL, options: dict[str, Any]) -> URL:
    """asyncpg takes no `search_path` argument; it goes to the server as a session setting instead."""
    value = url.query["search_path"]
    search_path = value if isinstance(value, str) else ",".join(value)
    connect_args = dict(options.get("connect_args") or {})
    server_settings = dict(connect_args.get("server_settings") or {})
    server_settings.setdefault("search_path", search_path)
    connect_args["server_settings"] = server_settings
    options["connect_args"] = connect_args
    return url.difference_update_query(["search_path"])


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = "IMMEDIATE"
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_SQLITE_EXPLICIT_BEGIN, True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
