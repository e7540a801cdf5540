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

Silent partitions. The engine's `command_timeout` is the driver connection's own, so it bounds these
statements too. A batch that timed out is not run again, its connection is terminated at once (asyncpg would
otherwise wait for the server to confirm the cancellation first), and the calls queued behind it fail with it:
each caller gets `Unavailable` within about one timeout. A timed-out write is a broken-connection write: its
COMMIT may have happened, so it is answered, never retried.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.hotpath.common import MAX_BATCH, HotPath, HotStatements, JoinWrite, WriteStats
from jsd.registry.hotpath.postgres import PostgresHotPath
from jsd.registry.hotpath.sqlite import SqliteHotPath

__all__ = ["MAX_BATCH", "HotPath", "HotStatements", "JoinWrite", "WriteStats", "hot_path_for"]


def hot_path_for(engine: AsyncEngine, statements: HotStatements) -> HotPath:
    """The hot path for the engine's driver; aiosqlite and asyncpg are the two supported."""
    driver = engine.dialect.driver
    if driver == "aiosqlite":
        return SqliteHotPath(engine, statements)
    if driver == "asyncpg":
        return PostgresHotPath(engine, statements)
    raise ValueError(f"unsupported database driver {driver!r}: use sqlite+aiosqlite or postgresql+asyncpg")

