"""Contract: the shipped migrations build exactly the schema the registry queries, idempotently."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from jsd.registry import migrate
from jsd.registry.migrate import alembic_config
from jsd.registry.tables import metadata


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _schema_diff(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


async def test_migrate_twice_is_a_no_op(database: Any) -> None:
    engine = database.engine()

    await migrate(engine)
    await migrate(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_revision) == _head()
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"devices", "device_nonces", "network_servers", "session_keys", "alembic_version"} <= tables


async def test_concurrent_migrators_do_not_collide(database: Any) -> None:
    engines = [database.engine() for _ in range(3)]

    await asyncio.gather(*(migrate(engine) for engine in engines))

    async with engines[0].connect() as conn:
        assert await conn.run_sync(_revision) == _head()


async def test_migrations_match_the_tables_the_code_uses(database: Any) -> None:
    engine = database.engine()
    await migrate(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []
