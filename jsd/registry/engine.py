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

The database file holds key blobs and token hashes, so it is for its owner only: a file (or its `-wal`,
`-shm`, `-writer.lock`) found readable by others is set to 0600 when the engine first connects, and SQLite
creates the WAL and shared-memory files with the database file's mode.

On PostgreSQL a `search_path` query parameter in the URL selects the schema
(`postgresql+asyncpg://user@host/db?search_path=jsd`), so one URL string is the whole configuration; an
`application_name` parameter names the daemon's sessions in `pg_stat_activity` (default `jsd`). A pooled
connection that the server or the network closed while it sat in the pool is replaced at checkout (asyncpg
notices the close as it happens, so the check costs no round trip), and connecting gives up after
`PG_CONNECT_TIMEOUT` seconds, well within an NS's patience (ChirpStack waits 5 s for an answer).

`command_timeout` (the daemon's `database.command_timeout`) bounds each statement, so a network partition that
drops packets silently fails calls instead of stalling them until TCP gives up. A statement that outlived it
leaves its connection mid-protocol, and a COMMIT sent on it may or may not have happened: that connection is
closed at once (not cancelled and handed back to the pool), and the pool replaces every connection it held
before (they most likely crossed the same broken path; the hot path's kept connections are its own affair). A
query that was merely slow runs on to its end on the server, which drops the session when it finds the client
gone. Migrations and the CLI pass no timeout: a migration of a large table may legitimately run for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from jsd.registry.errors import is_timeout

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_engine", "enable_wal", "read_only", "writes_first"]

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT = 3.0
PG_SERVER_SETTINGS = ("search_path", "application_name")
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-writer.lock")
"""The database file and the files SQLite and the hot path keep beside it; all of them owner-only."""

log = logging.getLogger("jsd.registry")

_SQLITE_EXPLICIT_BEGIN = "jsd_sqlite_explicit_begin"


def create_engine(url: str, *, command_timeout: float = 0, **options: Any) -> AsyncEngine:
    """Create an async engine for `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`.

    `command_timeout`: PostgreSQL only, seconds one statement may take before the call fails with TimeoutError
    and its connection is dropped; 0 = no limit (see the module docstring). `options` go to SQLAlchemy's
    `create_async_engine` (for example `connect_args`, `pool_size`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = _query_to_server_settings(parsed, options)
        connect_args = dict(options.get("connect_args") or {})
        connect_args.setdefault("timeout", PG_CONNECT_TIMEOUT)
        if command_timeout > 0:
            connect_args.setdefault("command_timeout", command_timeout)
        options["connect_args"] = connect_args
    engine = create_async_engine(parsed, **options)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, parsed.database)
    else:
        event.listen(engine.sync_engine, "checkout", _refuse_closed)
        event.listen(engine.sync_engine, "handle_error", _drop_timed_out)
    return engine


def _refuse_closed(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object) -> None:
    """A pooled connection closed meanwhile (backend terminated, server restarted): the pool takes a new one."""
    is_closed = getattr(record.driver_connection, "is_closed", None)
    if callable(is_closed) and is_closed():
        raise DisconnectionError("the pooled connection was closed by the server or the network")


def _drop_timed_out(context: ExceptionContext) -> None:
    """A statement timed out: its connection is closed now and treated as lost, never checked in again.

    asyncpg would cancel the statement and wait for the server to confirm before the connection could be used
    again; across a partition that confirmation never comes, so the connection is terminated instead, at once,
    and SQLAlchemy's invalidation that follows (and its graceful close) has nothing left to wait for.
    """
    connection = context.connection
    if connection is None or connection.invalidated or not is_timeout(context.original_exception):
        return
    context.is_disconnect = True
    driver = connection.connection.driver_connection
    terminate = getattr(driver, "terminate", None)
    if callable(terminate):
        terminate()


def restrict_sqlite_files(database: str, *, warn: bool = True) -> None:
    """Make the database file and its companions owner-only (0600) where they are readable by others.

    `warn`: say so in the log (a file that existed before; a file just created under a lax umask is quietly
    fixed).
    """
    for suffix in SQLITE_COMPANIONS:
        path = Path(database + suffix)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                os.chmod(path, 0o600)
                if warn:
                    log.warning("%s was readable by others (mode %o); now 0600", path, mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("%s is readable by others and cannot be changed: %s", path, exc)


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


def _query_to_server_settings(url: URL, options: dict[str, Any]) -> URL:
    """asyncpg takes no `search_path` or `application_name` argument; they go to the server as session
    settings instead."""
    connect_args = dict(options.get("connect_args") or {})
    server_settings = dict(connect_args.get("server_settings") or {})
    for name in PG_SERVER_SETTINGS:
        value = url.query.get(name)
        if value is not None:
            server_settings.setdefault(name, value if isinstance(value, str) else ",".join(value))
    server_settings.setdefault("application_name", "jsd")
    connect_args["server_settings"] = server_settings
    options["connect_args"] = connect_args
    return url.difference_update_query(list(PG_SERVER_SETTINGS))


def _configure_sqlite(engine: AsyncEngine, database: str | None) -> None:
    on_disk = bool(database) and database != ":memory:" and not str(database).startswith("file:")
    existed = on_disk and Path(str(database)).exists()
    restricted = False

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        nonlocal restricted
        if on_disk and not restricted:
            restrict_sqlite_files(str(database), warn=existed)
            restricted = True
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
