"""Database fixtures: every registry test runs on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL tests run in a fresh schema each (dropped afterwards), selected by a `search_path` query
parameter in the URL, which `jsd.registry.create_engine` understands; so a test database is just a URL.
The server comes from $JSD_TEST_POSTGRES_URL (default: local trust auth). If it is unreachable,
the PostgreSQL tests fail: a silent skip would hide that half of the contract went unchecked.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from jsd.registry import Registry, create_engine, migrate

POSTGRES_URL_ENV = "JSD_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgresql")


@dataclass
class Database:
    """One empty (not migrated) test database: its URL, and engines on it that are disposed at teardown."""

    backend: str
    url: str
    _engines: list[AsyncEngine] = field(default_factory=list)

    def engine(self, *, url: URL | None = None, **options: Any) -> AsyncEngine:
        """A new engine on this database; several of them stand for several worker processes.

        `url`: this database's URL with changes (another host or port, to go through a relay)."""
        engine = create_engine(self.url if url is None else url.render_as_string(hide_password=False), **options)
        self._engines.append(engine)
        return engine

    async def dispose(self) -> None:
        """Close every engine handed out, so no connection outlives the test."""
        for engine in self._engines:
            await engine.dispose()
        self._engines.clear()


async def _postgres_schema(base_url: str) -> tuple[AsyncEngine, str]:
    admin = create_engine(base_url, poolclass=NullPool, connect_args={"timeout": 5})
    schema = f"t_{secrets.token_hex(6)}"
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except (OSError, SQLAlchemyError) as exc:
        await admin.dispose()
        pytest.fail(
            f"PostgreSQL is required for the 'postgresql' tests but {base_url} is unreachable: {exc}. "
            f"Start the server or set {POSTGRES_URL_ENV}.",
            pytrace=False,
        )
    return admin, schema


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database per test, for each backend (ids "sqlite" and "postgresql")."""
    if request.param == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}")
        try:
            yield db
        finally:
            await db.dispose()
        return

    base_url = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    admin, schema = await _postgres_schema(base_url)
    url = make_url(base_url).update_query_dict({"search_path": schema})
    db = Database("postgresql", url.render_as_string(hide_password=False))
    try:
        yield db
    finally:
        await db.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


RegistryFactory = Callable[..., Awaitable[Registry]]


@pytest.fixture
def make_registry(database: Database) -> RegistryFactory:
    """Make Registries on the test database, each on its own engine (like separate workers).

    Keyword arguments go to `Registry`. Each call migrates first, which is idempotent.
    """

    async def make(**options: Any) -> Registry:
        engine = database.engine()
        await migrate(engine)
        return Registry(engine, **options)

    return make


@pytest.fixture
async def registry(make_registry: RegistryFactory) -> Registry:
    """A Registry on a freshly migrated database, for each backend."""
    return await make_registry()
