"""Start-up: prepare the embedded default once, then run worker processes sharing the port.

SoftHSM2 must not be called from two threads of one process (python-pkcs11 switches its locking off), so
each worker process has exactly one PKCS#11 thread, and the cores are used by running several workers that
listen on the same port with SO_REUSEPORT. Workers are started with ``spawn``: none inherits the parent's
PKCS#11 state.

One daemon per port and per state dir. SO_REUSEPORT lets any process of the same user bind a port that is
already in use, so a second daemon would silently share the port and split the NS's traffic between two
registries. The workers keep per-worker SO_REUSEPORT sockets (the kernel spreads connections over them by
hash; with one shared socket, whichever worker wakes first could take a whole burst of new connections, as
asyncio accepts up to a backlog's worth per wake-up), and the supervisor refuses to start when the port is
taken: it first binds the address *without* SO_REUSEPORT, which fails while anything listens there, then
holds an abstract Unix socket named after the address for its lifetime, which closes the window where its
own workers are down (a restart) or two daemons start at once. The state dir is held with an exclusive ``flock`` on ``serve.lock``; the workers inherit that lock, so
it is free only when the supervisor and every worker are gone.

Workers die with their supervisor: ``PR_SET_PDEATHSIG`` asks Linux to SIGKILL a worker the moment its
supervisor dies (a supervisor that dies was killed hard itself; a graceful stop of the worker could hang in
its cleanup, and nothing a worker holds needs one: a commit is atomic and a JoinNonce survives crashes). A
watchdog thread that notices a changed parent pid is the fallback where that signal is unavailable.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsd.config import Settings, database_url
from jsd.logs import lean_records, setup_logging

if TYPE_CHECKING:
    import asyncio
    import ssl

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
    import ssl  # here: the supervisor never imports it (serve)

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
    lean_records()
    loop = _new_event_loop()
    app = build_app(settings, events=index == 0)
    app.on_shutdown.append(_stop_deadline(_worker_grace(settings)))
    log.info("worker %d listening on %s:%s", index, settings.get("server", "host"), settings.get("server", "port"))
    web.run_app(
        app,
        host=settings.get("server", "host"),
        port=settings.get("server", "port"),
        reuse_port=True,
        ssl_context=_ssl_context(settings),
        print=None,
        access_log=None,
        keepalive_timeout=settings.get("server", "idle_timeout"),  # aiohttp arms it at connect and after each answer
        shutdown_timeout=settings.get("server", "shutdown_timeout"),
        loop=loop,
    )


def _worker_grace(settings: Settings) -> float:
    """How long a stopping worker may take: requests in progress (``shutdown_timeout``; a slow body ends at
    ``body_timeout``) and asynchronous answers still being delivered (``answer_timeout``), plus a margin."""
    return float(settings.get("server", "shutdown_timeout")) + float(settings.get("lbi", "answer_timeout")) + 2.0


def _stop_deadline(grace: float) -> Callable[[Any], Awaitable[None]]:
    """An ``on_shutdown`` hook that ends the process if its stop outlasts `grace` seconds.

    aiohttp's ``run_app`` waits without a bound for the tasks it cancels at the end; one that ignores its
    cancellation would keep a stopping worker (and so ``docker stop``, systemd, the supervisor) waiting.
    Everything a join answered was committed before its answer, so exiting here loses nothing.
    """

    async def arm(_app: Any) -> None:
        def expire() -> None:
            time.sleep(grace)
            log.error("worker %d did not stop within %.0f s; exiting", os.getpid(), grace)
            logging.shutdown()
            os._exit(1)

        threading.Thread(target=expire, name="jsd-stop-deadline", daemon=True).start()

    return arm


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (it roughly halves the event loop's share of a join), else asyncio's."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> None:
    """Prepare, then supervise the workers until SIGINT/SIGTERM; a worker that dies is restarted.

    Exits with a message, before anything else, when the state dir or the port is in use (module docstring).

    With several workers the supervisor stays small: preparation and the workers are separate Python
    processes (``python -m jsd.serve``), so the supervisor never loads SoftHSM2, SQLAlchemy or aiohttp, nor
    asyncio or ssl (imported where used): about 17 MB of the daemon's resident memory instead of 30.
    """
    setup_logging(settings.get("log", "format"), settings.get("log", "level"))
    os.umask(0o077)  # database, WAL, lock and token files: for this user only
    state_lock = hold_state_dir(settings.state_dir)
    port_lock = claim_port(settings.get("server", "host"), settings.get("server", "port"))
    _metrics_dir(settings)
    count = settings.get("server", "workers")
    if count == 1:
        import asyncio

        asyncio.run(prepare(settings))
        run_worker(settings, 0)
        return
    lock_fds = (state_lock, port_lock.fileno())
    preparer = _spawn(settings, "prepare", 0, lock_fds)
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
        workers[index] = _spawn(settings, "worker", index, lock_fds)
    while not stopping:
        time.sleep(0.5)
        for index, process in list(workers.items()):
            if process.poll() is not None and not stopping:
                log.error("worker %d exited with %s; restarting", index, process.returncode)
                _worker_gone(process.pid)
                time.sleep(1.0)
                workers[index] = _spawn(settings, "worker", index, lock_fds)
    # A worker's stop is bounded by shutdown_timeout (requests in progress; a slow body ends at body_timeout)
    # and answer_timeout (asynchronous answers still being delivered); past that it is killed.
    deadline = time.monotonic() + _worker_grace(settings) + 3.0  # one deadline for all workers, not one each
    for process in workers.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.info("stopped")


def _metrics_dir(settings: Settings) -> None:
    """Point every worker at one emptied directory for its metrics (jsd.metrics), before any is started.

    Values of an earlier run must go, or its counters would be added to this run's. An operator's own
    PROMETHEUS_MULTIPROC_DIR wins over ``<state_dir>/metrics``; only the ``*.db`` files of prometheus-client
    are removed from it. prometheus-client reads the variable when it is imported, so this runs before
    anything imports it.
    """
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.state_dir / "metrics")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _worker_gone(pid: int) -> None:
    from jsd.metrics import mark_process_dead

    mark_process_dead(pid)


SETTINGS_ENV = "JSD_INTERNAL_SETTINGS"
SUPERVISOR_ENV = "JSD_INTERNAL_SUPERVISOR"
STATE_LOCK = "serve.lock"


def hold_state_dir(state: Path) -> int:
    """Create or tighten the state dir (0700) and lock it for this daemon; exit with a message if in use.

    Returns the descriptor holding the lock; it stays open (and locked) for the life of the process and of
    the workers that inherit it.
    """
    path = state / STATE_LOCK
    try:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SystemExit(f"jsd serve: cannot lock the state dir {state}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(state.stat().st_mode)
    if mode & 0o077:
        try:
            state.chmod(0o700)
            log.warning("state dir %s was readable by others (mode %o); now 0700", state, mode)
        except OSError as exc:
            log.warning("state dir %s is readable by others (mode %o) and cannot be changed: %s", state, mode, exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text().strip() or "unknown"
        os.close(fd)
        raise SystemExit(
            f"jsd serve: state dir {state} is in use by another jsd serve (pid {holder}); "
            "each daemon needs its own general.state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_port(host: str, port: int) -> socket.socket:
    """Refuse a port something already listens on, then hold it against other jsd daemons.

    The probe binds without SO_REUSEPORT (which our workers' sockets cannot share) but with SO_REUSEADDR
    (so connections of an earlier run in TIME_WAIT do not count). The returned abstract Unix socket, named
    after the address, is held until the process exits; a second daemon cannot bind that name.
    """
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise SystemExit(f"jsd serve: server.host {host!r}: {exc}") from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise SystemExit(_port_message(where, exc)) from None
    holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        holder.bind(f"\0jsd-serve-{where}")
    except OSError as exc:
        holder.close()
        raise SystemExit(_port_message(where, exc)) from None
    return holder


def _port_message(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"jsd serve: port {where} is already in use (another jsd serve or another program listens there); "
            "stop it or choose another server.port"
        )
    return f"jsd serve: cannot listen on {where}: {exc.strerror or exc}"


def _spawn(settings: Settings, role: str, index: int, lock_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """A fresh interpreter for one role; settings travel as JSON in the environment (no secrets in them).

    The child inherits the supervisor's locks (`lock_fds`), so they stay held until the last process is gone.
    """
    payload = json.dumps([[section, name, value] for (section, name), value in settings.values.items()])
    env = dict(os.environ, **{SETTINGS_ENV: payload, SUPERVISOR_ENV: str(os.getpid())})
    return subprocess.Popen([sys.executable, "-m", "jsd.serve", role, str(index)], env=env, pass_fds=lock_fds)


PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD = 0.25
WATCHDOG_GRACE = 1.0


def die_with_supervisor(supervisor: int) -> None:
    """SIGKILL when the supervisor dies (Linux), and a watchdog that stops the worker soon after elsewhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != supervisor:  # it died before the request above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(WATCHDOG_PERIOD)
        log.error("supervisor %d is gone; stopping", supervisor)
        with contextlib.suppress(OSError):
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(WATCHDOG_GRACE)
        os._exit(1)

    threading.Thread(target=watch, name="jsd-supervisor-watchdog", daemon=True).start()


def _child_main(role: str, index: int) -> None:
    die_with_supervisor(int(os.environ[SUPERVISOR_ENV]))
    settings = Settings({(section, name): value for section, name, value in json.loads(os.environ[SETTINGS_ENV])})
    if role == "prepare":
        import asyncio

        setup_logging(settings.get("log", "format"), settings.get("log", "level"))
        asyncio.run(prepare(settings))
    else:
        run_worker(settings, index)


if __name__ == "__main__":
    _child_main(sys.argv[1], int(sys.argv[2]))
