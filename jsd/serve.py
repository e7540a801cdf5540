"""Start-up: prepare the embedded default once, then run worker processes sharing the port.

SoftHSM2 must not be called from two threads of one process (python-pkcs11 switches its locking off), so
each worker process has exactly one PKCS#11 thread, and the cores are used by running several workers that
listen on the same port with SO_REUSEPORT. Workers are started with ``spawn``: none inherits the parent's
PKCS#11 state.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import ssl
import time
from pathlib import Path

from aiohttp import web

from jsd.app import build_app, hsm_settings, softhsm_module
from jsd.config import Settings, database_url
from jsd.hsm import Hsm, Pin, init_softhsm_token, softhsm_conf_for
from jsd.logs import setup_logging
from jsd.registry import create_engine, migrate

log = logging.getLogger("jsd.serve")


def _secret_file(path: Path) -> Pin:
    """Read a PIN file, creating it (0600, random) on first start."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(16) + "\n")
    return Pin(path.read_text().strip())


def prepare_embedded_hsm(settings: Settings) -> bool:
    """Create the SoftHSM2 token of the embedded default if it is missing; True if it was created."""
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
    prepare_embedded_hsm(settings)
    hsm = await Hsm.open(hsm_settings(settings))
    try:
        group = settings.get("join", "default_hsm_group")
        if await hsm.ensure_storage_kek(group):
            log.info("created storage KEK for HSM group %r", group)
    finally:
        await hsm.aclose()
    url = database_url(settings)
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
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
    """One worker process: its own event loop, DB pool and PKCS#11 thread."""
    setup_logging(settings.get("log", "format"), settings.get("log", "level"))
    app = build_app(settings)
    log.info("worker %d listening on %s:%s", index, settings.get("server", "host"), settings.get("server", "port"))
    web.run_app(
        app,
        host=settings.get("server", "host"),
        port=settings.get("server", "port"),
        reuse_port=True,
        ssl_context=_ssl_context(settings),
        print=None,
        access_log=None,
    )


def serve(settings: Settings) -> None:
    """Prepare, then supervise the workers until SIGINT/SIGTERM; a worker that dies is restarted."""
    setup_logging(settings.get("log", "format"), settings.get("log", "level"))
    asyncio.run(prepare(settings))
    count = settings.get("server", "workers")
    if count == 1:
        run_worker(settings, 0)
        return
    context = multiprocessing.get_context("spawn")
    workers: dict[int, multiprocessing.process.BaseProcess] = {}
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for process in workers.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        workers[index] = context.Process(target=run_worker, args=(settings, index), name=f"jsd-worker-{index}")
        workers[index].start()
    while not stopping:
        time.sleep(0.5)
        for index, process in list(workers.items()):
            if not process.is_alive() and not stopping:
                log.error("worker %d exited with %s; restarting", index, process.exitcode)
                time.sleep(1.0)
                workers[index] = context.Process(target=run_worker, args=(settings, index), name=f"jsd-worker-{index}")
                workers[index].start()
    for process in workers.values():
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    log.info("stopped")
