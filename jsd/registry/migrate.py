"""Programmatic `alembic upgrade head`, safe to call from several worker processes at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.engine import enable_wal

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "migrate"]

_ALEMBIC_INI = Path(__file__).with_name("alembic.ini")

# Arbitrary constant naming jsd's migration lock among PostgreSQL advisory locks.
_PG_MIGRATION_LOCK = 0x6A73_645F_6D69_67


def alembic_config() -> Config:
    """The shipped alembic configuration, located next to this module rather than in the cwd.

    alembic is imported here, not at module level: only the process that migrates needs it (≈ 11 MB of RSS
    in each worker otherwise).
    """
    from alembic.config import Config

    return Config(str(_ALEMBIC_INI))


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there.

    Everything runs in one transaction that first takes a database-wide lock (`BEGIN IMMEDIATE` on
    SQLite, an advisory lock on PostgreSQL), so concurrent migrators run one after the other and
    the later ones find nothing to do. A SQLite database is also switched to WAL mode first.
    """
    await enable_wal(engine)
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
