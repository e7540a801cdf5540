"""/readyz when the database goes away and comes back: a TCP proxy the test controls sits between the app and
the shared PostgreSQL (which is never stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text

from jsd.app import HSM, build_app, softhsm_module
from jsd.config import load_settings
from jsd.registry import create_engine, migrate

PG = os.environ.get("JSD_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


class Proxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; `cut()` closes the listener and every connection."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers.difference_update((writer, upstream_writer))


async def _ready(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "readyz", timeout=aiohttp.ClientTimeout(total=10)) as response:
            return response.status, await response.json()


async def test_readyz_follows_the_database(hsm_state: Path, tmp_path: Path) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
    proxy = Proxy()
    await proxy.start()
    url = PG.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}") + f"?search_path={schema}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    settings = load_settings(None, environ={
        "JSD_GENERAL_STATE_DIR": str(tmp_path / "state"), "JSD_DATABASE_URL": url,
        "JSD_HSM_MODULE": softhsm_module(), "JSD_HSM_TOKEN_LABEL": "jsd-test",
        "JSD_HSM_PIN_FILE": str(hsm_state / "hsm-pin"), "JSD_HSM_SOFTHSM_CONF": os.environ["SOFTHSM2_CONF"],
    })  # fmt: skip
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await runner.app[HSM].ensure_storage_kek("default")
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    try:
        status, body = await _ready(base)
        assert status == 200, body
        await proxy.cut()
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
        await runner.cleanup()
        await proxy.cut()
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()
