"""Starting and stopping daemons for tests: ``jsd serve`` as a process, or the application inside the test.

One copy of the port, readiness and stop logic that the e2e, ops and events tests share (imported relatively,
as helpers are under pytest's importlib mode). A daemon counts as started when every worker listens on its
port (each worker has its own SO_REUSEPORT socket, so the kernel's socket table says exactly that): no test
sleeps to let the other workers bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url

from jsd.app import HSM, REGISTRY, build_app, softhsm_module
from jsd.config import Settings, load_settings
from jsd.hsm import Hsm
from jsd.registry import NetworkServer, NewDevice, Registry, create_engine, migrate

PG_ADMIN_URL = os.environ.get("JSD_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
TOKEN_LABEL = "jsd-test"  # the session token of tests/conftest.py
STOP_WITHIN = 20.0
"""Seconds a daemon may take to stop on SIGTERM (or its in-process cleanup) before the test fails: above the
15 s after which ``jsd serve`` kills a worker that outlasts its own stop deadline (the defaults' 12 s + 3 s)."""
APP_SHUTDOWN = 0.5
"""Seconds an in-process application waits at its stop for requests still running; then they are cancelled.
At a test's end these are only what the test left behind, such as a console page's live join stream, which
notices that its browser has gone at its next heartbeat (15 s later): aiohttp's default waits 60 s."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (one per worker of ``jsd serve``)."""
    wanted = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        count += fields[1] == wanted and fields[3] == "0A"  # 0A: LISTEN
    return count


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_until(condition: Callable[[], Any], within: float, what: str, every: float = 0.05) -> None:
    """Poll `condition` until it is truthy; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(every)


def hsm_environ(hsm_state: Path) -> dict[str, str]:
    """The settings that put a daemon on the session's SoftHSM2 token (tests/conftest.py's hsm_state)."""
    return {
        "JSD_HSM_MODULE": softhsm_module(),
        "JSD_HSM_TOKEN_LABEL": TOKEN_LABEL,
        "JSD_HSM_PIN_FILE": str(hsm_state / "hsm-pin"),
        "JSD_HSM_SOFTHSM_CONF": os.environ["SOFTHSM2_CONF"],
    }


def daemon_settings(hsm_state: Path, database_url: str, state_dir: Path, **changes: Any) -> Settings:
    """Settings of an in-process daemon on the test token and `database_url`, on a free port."""
    environ = {
        "JSD_GENERAL_STATE_DIR": str(state_dir),
        "JSD_DATABASE_URL": database_url,
        "JSD_SERVER_PORT": str(free_port()),
        **hsm_environ(hsm_state),
    }
    return load_settings(None, environ=environ).replace(**changes)


async def start_app(settings: Settings, *, events: bool = True) -> tuple[web.Application, web.AppRunner, str]:
    """The real application listening on 127.0.0.1 inside the test; its runner and base URL."""
    app = build_app(settings, events=events)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=APP_SHUTDOWN)
    await runner.setup()
    await app[HSM].ensure_storage_kek("default")
    port = settings.get("server", "port")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return app, runner, f"http://127.0.0.1:{port}/"


async def stop_app(runner: web.AppRunner) -> None:
    """``runner.cleanup()``; one that outlasts `STOP_WITHIN` fails the test (a stop that hangs is a bug)."""
    try:
        await asyncio.wait_for(runner.cleanup(), STOP_WITHIN)
    except TimeoutError:
        raise AssertionError(f"the application did not stop within {STOP_WITHIN:.0f} s") from None


@dataclass
class Database:
    backend: str
    url: str


async def _pg_execute(statement: str) -> None:
    engine = create_engine(PG_ADMIN_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


_TEMPLATES: dict[str, tuple[str, str]] = {}
"""Per backend, a database `alembic upgrade head` made once in this process: (its name, how to copy it)."""


async def _template(backend: str) -> tuple[str, str]:
    """SQLite: a migrated file (the name, and its path); PostgreSQL: a migrated schema, dropped again once
    ``pg_dump`` wrote it out (the name, and that dump). ("", "") where pg_dump is missing: migrate each time."""
    if backend not in _TEMPLATES:
        name = f"t_template_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            path = Path(tempfile.mkdtemp(prefix="jsd-template-")) / "jsd.sqlite3"
            engine = create_engine(f"sqlite+aiosqlite:///{path}")
            await migrate(engine)
            await engine.dispose()
            _TEMPLATES[backend] = (name, str(path))
        else:
            await _pg_execute(f"CREATE SCHEMA {name}")
            try:
                engine = create_engine(f"{PG_ADMIN_URL}?search_path={name}")
                await migrate(engine)
                await engine.dispose()
                _TEMPLATES[backend] = (name, await asyncio.to_thread(_pg_dump, name))
            finally:
                await _pg_execute(f"DROP SCHEMA {name} CASCADE")
    return _TEMPLATES[backend]


def _pg_dump(schema: str) -> str:
    """The SQL that makes `schema` again, rows included (alembic's version); "" without pg_dump."""
    url = make_url(PG_ADMIN_URL)
    command = ["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    command += ["--no-owner", "--no-privileges", "--inserts", "-n", schema, url.database or "postgres"]
    try:
        dumped = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    except FileNotFoundError:
        return ""
    return "\n".join(line for line in dumped.splitlines() if not line.startswith("\\"))  # psql's \restrict


@contextlib.asynccontextmanager
async def migrated_database(backend: str, directory: Path) -> AsyncIterator[Database]:
    """A migrated, empty database: a SQLite file in `directory`, or a fresh PostgreSQL schema dropped after.

    Each is a copy of one that ``alembic upgrade head`` made once in this process (the migrations themselves
    are tested in tests/registry): copying is ~10 times faster than migrating, and the suite makes hundreds.
    """
    try:
        name, template = await _template(backend)
    except OSError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    if backend == "sqlite":
        db = Database("sqlite", f"sqlite+aiosqlite:///{directory / 'jsd.sqlite3'}")
        shutil.copy(template, directory / "jsd.sqlite3")
        yield db
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    db = Database("postgresql", f"{PG_ADMIN_URL}?search_path={schema}")
    if template:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("+asyncpg", ""))
        try:
            await conn.execute(template.replace(name, schema))
        finally:
            await conn.close()
    else:
        await _pg_execute(f"CREATE SCHEMA {schema}")
        engine = create_engine(db.url)
        await migrate(engine)
        await engine.dispose()
    try:
        yield db
    finally:
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
        from jsd.app import STORES
        from jsd.registry.journal import AuditRecord

        audit = AuditRecord(account=None, key_id=None, source="test", action="roaming.added")
        assert await self.app[STORES].roaming.add_roaming(home_net_id.lower(), visited_net_id.lower(), audit)

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


@contextlib.asynccontextmanager
async def running_server(
    hsm_state: Path, database: Database, state_dir: Path, **changes: Any
) -> AsyncIterator[JsdServer]:
    """The real LBI application listening on 127.0.0.1 inside the test, with settings `changes`."""
    settings = daemon_settings(hsm_state, database.url, state_dir, **changes)
    app, runner, url = await start_app(settings)
    try:
        yield JsdServer(url, app, settings, database)
    finally:
        await stop_app(runner)


class Serve:
    """``python -m jsd serve`` in a session of its own on one state directory, as an operator runs it."""

    def __init__(
        self,
        state: Path,
        *,
        workers: int = 2,
        port: int | None = None,
        log: Path | None = None,
        log_format: str = "json",
        env: dict[str, str] | None = None,
    ) -> None:
        self.state = state
        self.workers = workers
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2", "PROMETHEUS_"))}
        self.env.update({
            "JSD_GENERAL_STATE_DIR": str(state), "JSD_SERVER_PORT": str(self.port),
            "JSD_SERVER_WORKERS": str(workers), "JSD_LOG_FORMAT": log_format, **(env or {}),
        })  # fmt: skip
        self.log = log or state.parent / f"serve-{state.name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A ``jsd`` command against this state directory."""
        return subprocess.run(
            [sys.executable, "-m", "jsd", *args], env=self.env, input=stdin, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def launch(self) -> subprocess.Popen[bytes]:
        """Start without waiting (for a daemon expected to refuse to start)."""
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jsd", "serve"], env=self.env, stdout=handle, stderr=handle,
                start_new_session=True,
            )  # fmt: skip
        return self.process

    def start(self, within: float = 60) -> None:
        """Start and wait until every worker listens."""
        process = self.launch()

        def ready() -> bool:
            assert process.poll() is None, self.log.read_text()
            return listeners(self.port) >= self.workers

        try:
            wait_until(ready, within, "the daemon's workers to listen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.log.read_text()}") from None

    def port_moved(self) -> None:
        """A fresh port for the next start (the old one may have gone to another program meanwhile)."""
        self.port = free_port()
        self.env["JSD_SERVER_PORT"] = str(self.port)

    def kill(self) -> None:
        """SIGKILL to the whole process group; returns when no worker listens any more."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None
        wait_until(lambda: not listening(self.port), 10, "the workers to die after SIGKILL")

    def stop(self) -> None:
        """SIGTERM to the process group; a daemon still running `STOP_WITHIN` seconds later fails the test."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise AssertionError(f"the daemon did not stop within {STOP_WITHIN:.0f} s of SIGTERM") from None

    def call(
        self, method: str, path: str, key: str | None = None, body: Any = None, timeout: float = 20
    ) -> tuple[int, str]:
        """A request (REST, or an LBI message to ``/``) with a JSON body and a bearer key; status and text."""
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get(self, path: str) -> tuple[int, str]:
        return self.call("GET", path, timeout=10)

    def request(self, method: str, path: str, key: str | None = None, body: Any = None, timeout: float = 20) -> Any:
        """The JSON answer of a request that must succeed."""
        status, text = self.call(method, path, key, body, timeout)
        assert 200 <= status < 300, f"{method} {path}: HTTP {status}: {text[:500]}"
        return json.loads(text)
