"""Contract: the shipped migrations build exactly the schema the registry queries, idempotently."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
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


def _alembic(connection: Connection, action: str, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    getattr(command, action)(config, revision)


async def test_0004_versions_upgrades_a_populated_database_and_downgrades(database: Any) -> None:
    """A database at 0003 with devices gains the table of retired versions, its devices untouched; and back."""
    engine = database.engine()
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "upgrade", "0003_console")
        await conn.execute(
            text("INSERT INTO devices (dev_eui, join_eui, mac_version, hsm_group, app_key_blob) "
                 "VALUES ('0080000005000001', '70b3d57ed0000001', '1.0.3', 'default', :blob)"),
            {"blob": b"\x01" * 24},
        )  # fmt: skip
        await conn.execute(
            text("INSERT INTO device_nonces (dev_eui, version, join_nonce, used_dev_nonces) "
                 "VALUES ('0080000005000001', 7, 3, :used)"),
            {"used": b""},
        )  # fmt: skip

    await migrate(engine)

    async with engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []
        assert (await conn.execute(text("SELECT version, join_nonce FROM device_nonces"))).all() == [(7, 3)]
        assert (await conn.execute(text("SELECT count(*) FROM retired_versions"))).scalar() == 0
    async with engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0003_console")
    async with engine.connect() as conn:
        assert "retired_versions" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert await conn.run_sync(_revision) == "0003_console"
