"""One daemon per port and per state dir, workers that die with their supervisor, files for the owner only.

The real ``jsd serve`` (a supervisor and two workers) on the embedded default. SO_REUSEPORT lets any process
of the same user bind a port already in use, so without a check a second daemon would silently share the
port and split an NS's joins between two registries.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jsd_sim import SimDevice

from ..daemons import Serve, alive, children, listening

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Serve]]:
    started: list[Serve] = []
    try:
        yield started
    finally:
        for serve in started:
            serve.stop()


def _provision(serve: Serve, tmp_path: Path) -> tuple[SimDevice, str]:
    token, app_key, dev_eui = secrets.token_urlsafe(24), secrets.token_bytes(16), secrets.token_bytes(8)
    (tmp_path / "kek").write_text(secrets.token_hex(16))
    (tmp_path / "token").write_text(token)
    key = tmp_path / "admin.key"
    made = serve.cli("accounts", "create", "admin", "--kind", "operator", "--out", str(key))  # the first: local
    assert made.returncode == 0, made.stderr
    serve.start()  # an NS is registered through the API
    try:
        added = serve.cli("--api-key-file", str(key), "ns", "add", HOME, "--kek-file", str(tmp_path / "kek"),
                          "--token-file", str(tmp_path / "token"))  # fmt: skip
    finally:
        serve.stop()
    assert added.returncode == 0, added.stderr
    added = serve.cli(
        "devices", "add", dev_eui.hex(), "--join-eui", JOIN_EUI, "--mac-version", "1.0.4", "--keys-file", "-",
        "--home-net-id", HOME, stdin=json.dumps({"AppKey": app_key.hex()}),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.4", app_key), token


def _post(serve: Serve, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    """An LBI request; the HTTP status and the answer (empty for an HTTP error)."""
    status, text = serve.call("POST", "/", token, body, timeout=10)
    return status, json.loads(text) if status < 400 else {}


def _join_body(device: SimDevice) -> dict[str, Any]:
    return {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
        "MessageType": "JoinReq", "MACVersion": "1.0.4", "PHYPayload": device.join_request().hex(),
        "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }  # fmt: skip


def test_workers_die_with_the_supervisor_under_load(daemons: list[Serve], tmp_path: Path) -> None:
    serve = Serve(tmp_path / "state", log_format="plain")
    daemons.append(serve)
    device, token = _provision(serve, tmp_path)
    serve.start()
    assert serve.process is not None
    workers = children(serve.process.pid)
    assert len(workers) == 2

    answers: list[tuple[int, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            with lock:
                body = _join_body(device)
            try:
                status, answer = _post(serve, body, token)
                answers.append((status, answer.get("Result", {}).get("ResultCode", "-")))
            except OSError:
                time.sleep(0.01)

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)
        # Four clients race one device: a DevNonce overtaken by a later one is refused (JoinReqFailed).
        assert len(answers) > 5 and (200, "Success") in answers
        assert {status for status, _ in answers} == {200}
        serve.process.send_signal(signal.SIGKILL)  # the supervisor alone, not its process group
        serve.process.wait(5)
        killed = time.monotonic()
        while any(alive(pid) for pid in workers) and time.monotonic() - killed < 2.0:
            time.sleep(0.05)
        survivors = {pid: Path(f"/proc/{pid}/stat").read_text() for pid in workers if alive(pid)}
        assert not survivors, f"workers outlived their supervisor by 2 s: {survivors}\n{serve.log.read_text()[-3000:]}"
    finally:
        stop.set()
        for client in clients:
            client.join(15)
        for pid in workers:  # orphans of a failed run must not outlive the test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    serve.process = None

    # The state dir is free again: a new daemon starts on it and serves the device. (On a fresh port: the old
    # one, free since the workers died, may already have been handed to another program of this busy machine.)
    serve.port_moved()
    serve.start()
    status, answer = _post(serve, _join_body(device), token)
    assert (status, answer["Result"]["ResultCode"]) == (200, "Success")


@pytest.mark.parametrize("workers", [2, 1])
def test_a_second_daemon_on_a_port_in_use_refuses_to_start(daemons: list[Serve], tmp_path: Path, workers: int) -> None:
    first = Serve(tmp_path / "first", workers=workers, log_format="plain")
    daemons.append(first)
    first.start()
    second = Serve(tmp_path / "second", port=first.port, workers=workers, log_format="plain")
    daemons.append(second)
    process = second.launch()
    assert process.wait(30) != 0
    second.process = None
    message = second.log.read_text()
    assert f"port 127.0.0.1:{first.port} is already in use" in message, message
    assert "Traceback" not in message
    assert listening(first.port) and first.process is not None and first.process.poll() is None


def test_a_port_held_by_another_program_is_refused(daemons: list[Serve], tmp_path: Path) -> None:
    """A listener that is not ours, with SO_REUSEPORT like our workers: still refused, never shared."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        serve = Serve(tmp_path / "state", port=other.getsockname()[1], log_format="plain")
        daemons.append(serve)
        process = serve.launch()
        assert process.wait(30) != 0
        serve.process = None
    assert f"port 127.0.0.1:{serve.port} is already in use" in serve.log.read_text()


def test_a_second_daemon_on_a_state_dir_in_use_refuses_to_start(daemons: list[Serve], tmp_path: Path) -> None:
    first = Serve(tmp_path / "state", log_format="plain")
    daemons.append(first)
    first.start()
    second = Serve(tmp_path / "state", log_format="plain")
    daemons.append(second)
    process = second.launch()
    assert process.wait(30) != 0
    second.process = None
    message = second.log.read_text()
    assert f"state dir {tmp_path / 'state'} is in use by another jsd serve" in message, message
    assert not listening(second.port)


def test_state_dir_and_database_files_are_for_the_owner_only(daemons: list[Serve], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    serve = Serve(state, log_format="plain")
    daemons.append(serve)
    device, token = _provision(serve, tmp_path)
    database = state / "jsd.sqlite3"
    database.chmod(0o644)  # as an older version left it
    serve.start()
    status, answer = _post(serve, _join_body(device), token)
    assert (status, answer["Result"]["ResultCode"]) == (200, "Success")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(state) == 0o700
    for name in ("jsd.sqlite3", "jsd.sqlite3-wal", "jsd.sqlite3-shm", "jsd.sqlite3-writer.lock", "hsm-pin", "serve.lock"):
        assert mode(state / name) == 0o600, name
    log = serve.log.read_text()
    assert f"state dir {state} was readable by others (mode 755); now 0700" in log
    assert f"{database} was readable by others (mode 644); now 0600" in log
