"""/readyz when the database goes away and comes back: a TCP proxy the test controls sits between the app and
the shared PostgreSQL (which is never stopped)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text

from bench.tcp_relay import Relay
from jsd.registry import create_engine, migrate

from ..daemons import daemon_settings, start_app, stop_app

PG = os.environ.get("JSD_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def _ready(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "readyz", timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.json()


async def test_readyz_follows_the_database(hsm_state: Path, tmp_path: Path) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
    proxy = Relay(("127.0.0.1", 5432))
    await proxy.start()
    url = PG.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}") + f"?search_path={schema}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    _, runner, base = await start_app(daemon_settings(hsm_state, url, tmp_path / "state"))
    try:
        status, body = await _ready(base)
        assert status == 200, body
        proxy.cut()
        status, body = await _ready(base)
        assert status == 503 and body["status"] == "unready"
        assert body["checks"]["database"]["ok"] is False and body["checks"]["hsm"]["ok"] is True
        assert "postgres" not in str(body) and schema not in str(body)  # no URL, no server message
        async with aiohttp.ClientSession() as client, client.get(base + "healthz") as response:
            assert response.status == 200
        await proxy.start()  # same port
        for _ in range(75):  # the pool drops its dead connections and opens new ones
            status = (await _ready(base))[0]
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert status == 200
    finally:
        await stop_app(runner)
        proxy.cut()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()
