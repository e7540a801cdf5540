"""Shared fixtures: a real SoftHSM2 token, real SQLite files and PostgreSQL schemas, a running daemon.

Nothing of ours is mocked. The daemon fixture runs the real aiohttp application on a free port of
127.0.0.1 and is parametrized over SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest

from jsd.app import softhsm_module
from jsd.hsm import Hsm, HsmSettings, Pin, init_softhsm_token, softhsm_conf_for

from .daemons import TOKEN_LABEL, Database, JsdServer, migrated_database, running_server


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
    # tests/hsm play a PIN holder with python-pkcs11, which refuses a module that is already initialised;
    # jsd accepts one, so python-pkcs11 goes first.
    pkcs11.lib(softhsm_module())
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


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    async with migrated_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
def jsd_settings() -> dict[str, Any]:
    """Settings changes for `jsd_server` (``section__name=value``); a test module overrides this fixture."""
    return {}


@pytest.fixture
async def jsd_server(
    hsm_state: Path, database: Database, tmp_path: Path, jsd_settings: dict[str, Any]
) -> AsyncIterator[JsdServer]:
    """The real LBI application listening on 127.0.0.1, on SQLite or PostgreSQL."""
    async with running_server(hsm_state, database, tmp_path / "state", **jsd_settings) as server:
        yield server
