"""Start-up: prepare the embedded default once, then run worker processes sharing the port.

SoftHSM2 must not be called from two threads of one process (python-pkcs11 switches its locking off), so
each worker process has exactly one PKCS#11 thread, and the cores are used by running several workers that
listen on the same port with SO_REUSEPORT. Workers are started with ``spawn``: none inherits the parent's
PKCS#11 state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jsd.config import Settings, database_url
from jsd.logs import setup_logging

if TYPE_CHECKING:
    from jsd.hsm import Pin

log = logging.getLogger("jsd.serve")


def _secret_file(path: Path) -> Pin:
    """Read a PIN file, creating it (0600, random) on first start."""
    from jsd.hsm import Pin

    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(16) + "\n")
    return Pin(path.read_text().strip())


def prepare_embedded_hsm(settings: Settings) -> bool:
    """Create the SoftHSM2 token of the embedded default if it is missing; True if it was created."""
    from jsd.app import softhsm_module
    from jsd.hsm import init_softhsm_token, softhsm_conf_for

    if settings.get("hsm", "module"):
        return False
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = Path(settings.get("hsm", "softhsm_conf") or softhsm_conf_for(state))
    os.environ["SOFTHSM2_CONF"] = str(conf)
    tokens = state / "tokens"
    fresh = not tokens.exists() or not any(tokens.iterdir())
    so_pin = _secret_file(state / "hsm-so-pin")
    user_pin = _secret_file(Path(settings.get("hsm", "pin_file") or state / "hsm-pin"))
    init_softhsm_token(softhsm_module(), settings.get("hsm", "token_label"), so_pin, user_pin)
    if fresh:
        log.info("created SoftHSM2 token %r in %s", settings.get("hsm", "token_label"), tokens)
    return fresh


async def prepare(settings: Settings) -> None:
    """Everything a worker relies on: token, storage KEK of the default group, migrated database."""
    from jsd.app import hsm_settings
    from jsd.hsm import Hsm
    from jsd.registry import create_engine, migrate

    prepare_embedded_hsm(settings)
    hsm = await Hsm.open(hsm_settings(settings))
    try:
        group = settings.get("join", "default_hsm_group")
        if await hsm.ensure_storage_kek(group):
            log.info("created storage KEK for HSM group %r", group)
    finally:
        await hsm.aclose()
    url = database_url(settings)
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():  # noqa: ASYNC240 - start-up only
        log.info("creating SQLite database %s", url.split("///", 1)[-1])
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    cert = settings.get("server", "tls_cert")
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, settings.get("server", "tls_key") or None)
    client_ca = settings.get("server", "tls_client_ca")
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def run_worker(settings: Settings, index: int) -> None:
    """One worker process: its own event loop, DB pool and PKCS#11 thread.

    Worker 0 alone also runs the MQTT publisher and command subscriber: one drainer keeps the outbox in seq
    order and one subscriber sees each command once. It lives in a worker rather than a process of its own:
    a process with the registry and an HSM session would add about a worker's memory (~95 MB of the 250 MB
    budget in docs/benchmarks.md), while publishing costs a JSON encode and a socket write per event;
    and the supervisor already restarts worker 0 when it dies.
    """
    from aiohttp import web

    from jsd.app import build_app

    setup_logging(settings.get("log", "format"), settings.get("log", "level"))
    loop = _new_event_loop()
    app = build_app(settings, events=index == 0)
    log.info("worker %d listening on %s:%s", index, settings.get("server", "host"), settings.get("server", "port"))
    web.run_app(
        app,
        host=settings.get("server", "host"),
        port=settings.get("server", "port"),
        reuse_port=True,
        ssl_context=_ssl_context(settings),
        print=None,
        access_log=None,
        loop=loop,
    )


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it roughly halves the event loop's share of a join), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> None:
    """Prepare, then supervise the workers until SIGINT/SIGTERM; a worker that dies is restarted.

    With several workers the supervisor stays small: preparation and the workers are separate Python
    processes (``python -m jsd.serve``), so the supervisor never loads SoftHSM2, SQLAlchemy or aiohttp.
    """
    setup_logging(settings.get("log", "format"), settings.get("log", "level"))
    count = settings.get("server", "workers")
    if count == 1:
        asyncio.run(prepare(settings))
        run_worker(settings, 0)
        return
    preparer = _spawn(settings, "prepare", 0)
    if preparer.wait() != 0:
        raise SystemExit(f"start-up preparation failed (exit code {preparer.returncode})")
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        workers[index] = _spawn(settings, "worker", index)
    while not stopping:
        time.sleep(0.5)
        for index, process in list(workers.items()):
            if process.poll() is not None and not stopping:
                log.error("worker %d exited with %s; restarting", index, process.returncode)
                time.sleep(1.0)
                workers[index] = _spawn(settings, "worker", index)
    for process in workers.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    log.info("stopped")


SETTINGS_ENV = "JSD_INTERNAL_SETTINGS"


def _spawn(settings: Settings, role: str, index: int) -> subprocess.Popen[bytes]:
    """A fresh interpreter for one role; settings travel as JSON in the environment (no secrets in them)."""
    payload = json.dumps([[section, name, value] for (section, name), value in settings.values.items()])
    env = dict(os.environ, **{SETTINGS_ENV: payload})
    return subprocess.Popen([sys.executable, "-m", "jsd.serve", role, str(index)], env=env)


def _child_main(role: str, index: int) -> None:
    settings = Settings({(section, name): value for section, name, value in json.loads(os.environ[SETTINGS_ENV])})
    if role == "prepare":
        setup_logging(settings.get("log", "format"), settings.get("log", "level"))
        asyncio.run(prepare(settings))
    else:
        run_worker(settings, index)


if __name__ == "__main__":
    _child_main(sys.argv[1], int(sys.argv[2]))
