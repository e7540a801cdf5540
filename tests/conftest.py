"""Shared fixtures: a real SoftHSM2 token, real SQLite files and PostgreSQL schemas, a running daemon.

Nothing of ours is mocked. The daemon fixture runs the real aiohttp application on a free port of
127.0.0.1 and is parametrized over SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from jsd.app import HSM, REGISTRY, softhsm_module
from jsd.config import Settings
from jsd.hsm import Hsm, HsmSettings, Pin, init_softhsm_token, softhsm_conf_for
from jsd.registry import NetworkServer, NewDevice, Registry, create_engine, migrate

from .daemons import TOKEN_LABEL, daemon_settings, start_app, stop_app

PG_ADMIN_URL = os.environ.get("JSD_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for command in (["softhsm2-util", "--version"], ["psql", "--version"], ["mosquitto", "-h"]):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=5)
            lines.append(f"{command[0]}: {(out.stdout or out.stderr).splitlines()[0]}")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            lines.append(f"{command[0]}: not found")
    return lines


@pytest.fixture(scope="session")
def hsm_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SoftHSM2 token for the whole run (PKCS#11 is initialised once per process)."""
    state = tmp_path_factory.mktemp("hsm-state")
    os.environ["SOFTHSM2_CONF"] = str(softhsm_conf_for(state))
    (state / "hsm-pin").write_text(secrets.token_hex(8))
    init_softhsm_token(softhsm_module(), TOKEN_LABEL, Pin(secrets.token_hex(8)), Pin((state / "hsm-pin").read_text()))
    return state


@pytest.fixture(scope="session")
def hsm_settings(hsm_state: Path) -> HsmSettings:
    return HsmSettings(module=softhsm_module(), token_label=TOKEN_LABEL, pin=Pin((hsm_state / "hsm-pin").read_text()))


@pytest.fixture
async def hsm(hsm_settings: HsmSettings) -> AsyncIterator[Hsm]:
    opened = await Hsm.open(hsm_settings)
    await opened.ensure_storage_kek("default")
    try:
        yield opened
    finally:
        await opened.aclose()


@dataclass
class Database:
    backend: str
    url: str


async def _pg_execute(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL)
    try:
        async with engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'jsd.sqlite3'}")
        schema = None
    else:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        try:
            await _pg_execute(f"CREATE SCHEMA {schema}")
        except OSError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
        db = Database("postgresql", f"{PG_ADMIN_URL}?search_path={schema}")
    engine = create_engine(db.url)
    await migrate(engine)
    await engine.dispose()
    try:
        yield db
    finally:
        if schema is not None:
            await _pg_execute(f"DROP SCHEMA {schema} CASCADE")


@dataclass
class JsdServer:
    """A running daemon and operator shortcuts to register NSs and devices in it."""

    url: str
    app: web.Application
    settings: Settings
    database: Database
    kek_labels: dict[str, bytes] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        return self.app[REGISTRY]

    @property
    def hsm(self) -> Hsm:
        return self.app[HSM]

    async def add_network_server(
        self, net_id: str, kek: bytes, token: str, answer_url: str | None = None, async_mode: bool = False
    ) -> str:
        label = f"ns-{net_id}-{uuid.uuid4().hex[:6]}"
        await self.hsm.import_kek(label, kek)
        await self.registry.add_network_server(
            NetworkServer(
                net_id=bytes.fromhex(net_id),
                name=f"NS {net_id}",
                kek_label=label,
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                cert_fingerprint=None,
                answer_url=answer_url,
                async_mode=async_mode,
            )
        )
        self.kek_labels[label] = kek
        return label

    async def add_roaming_agreement(self, home_net_id: str, visited_net_id: str) -> None:
        """Let the visited NS ask HomeNSReq for the home NS's devices (as an operator would)."""
        from jsd.app import STORE
        from jsd.registry.ownership import AuditRecord

        audit = AuditRecord(account=None, key_id=None, source="test", action="roaming.added")
        assert await self.app[STORE].add_roaming(home_net_id.lower(), visited_net_id.lower(), audit)

    async def add_device(
        self,
        dev_eui: str,
        join_eui: str,
        mac_version: str,
        app_key: bytes,
        nwk_key: bytes | None,
        home_net_id: str | None,
        astk: bytes | None,
    ) -> str | None:
        label = None
        if astk is not None:
            label = f"astk-{uuid.uuid4().hex[:8]}"
            await self.hsm.import_kek(label, astk)
        await self.registry.add_device(
            NewDevice(
                dev_eui=bytes.fromhex(dev_eui),
                join_eui=bytes.fromhex(join_eui),
                mac_version=mac_version,
                hsm_group="default",
                app_key_blob=await self.hsm.import_root_key("default", app_key),
                nwk_key_blob=await self.hsm.import_root_key("default", nwk_key) if nwk_key else None,
                home_net_id=bytes.fromhex(home_net_id) if home_net_id else None,
                astk_label=label,
                owner_account=None,
                name=None,
            )
        )
        return label


@pytest.fixture
def jsd_settings() -> dict[str, Any]:
    """Settings changes for `jsd_server` (``section__name=value``); a test module overrides this fixture."""
    return {}


@pytest.fixture
async def jsd_server(
    hsm_state: Path, database: Database, tmp_path: Path, jsd_settings: dict[str, Any]
) -> AsyncIterator[JsdServer]:
    """The real LBI application listening on 127.0.0.1, on SQLite or PostgreSQL."""
    settings = daemon_settings(hsm_state, database.url, tmp_path / "state", **jsd_settings)
    app, runner, url = await start_app(settings)
    try:
        yield JsdServer(url, app, settings, database)
    finally:
        await stop_app(runner)
