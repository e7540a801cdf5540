"""The PostgreSQL hot path: batched reads in one round trip, a write batch as one statement
(why: `jsd.registry.hotpath`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.hotpath import common

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


class PostgresHotPath(common.HotPath):
    """Queued reads are one `= ANY(...)` round trip; a write batch is one statement (see `_PostgresWrites`)."""

    def __init__(self, engine: AsyncEngine, statements: common.HotStatements) -> None:
        super().__init__(engine, _PostgresWrites())
        self._reads: common.Batcher[str, Sequence[Any] | None] = common.Batcher(
            engine, _PostgresReads(common.compiled(engine, statements.get_devices_any)[0]), None, rerun=True
        )

    async def read_device(self, eui: str) -> Sequence[Any] | None:
        return await self._reads.submit(eui)


class _PostgresReads:
    def __init__(self, sql: str) -> None:
        self._sql = sql

    async def __call__(self, driver: Any, euis: list[str]) -> list[common.Outcome]:
        rows = await driver.fetch(self._sql, euis)
        by_eui = {row[0]: row for row in rows}
        return [by_eui.get(eui) for eui in euis]


class _PostgresWrites(common.Writes):
    """A batch is one round trip (its own implicit transaction), plus one to explain refused calls."""

    def __init__(self) -> None:
        super().__init__()
        from asyncpg import IntegrityConstraintViolationError  # type: ignore[import-untyped]

        self._integrity_error = IntegrityConstraintViolationError

    async def __call__(self, driver: Any, writes: list[common.JoinWrite]) -> list[common.Outcome]:
        try:
            rows = await driver.fetch(_PG_COMMIT_BATCH, *_pg_columns(writes))
        except self._integrity_error as exc:
            if len(writes) == 1:
                self.count(1, 0)
                return [common.duplicate_session(writes[0], exc)]
            outcomes: list[common.Outcome] = []
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
                outcomes[i] = common.refusal(writes[i], stored.get(writes[i].eui))
        return outcomes


def _pg_columns(writes: list[common.JoinWrite]) -> list[list[Any]]:
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
