"""The real ``jsd`` executable on a state directory of its own: ``jsd serve`` with workers, CLI commands, HTTP."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jsd_sim import SimDevice

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Net:
    kek: bytes
    token: str
    label: str


class Daemon:
    """Runs ``jsd`` commands against one state directory (embedded SQLite + SoftHSM2), as an operator would."""

    def __init__(self, state: Path, workers: int = 2) -> None:
        self.state = state
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2", "PROMETHEUS_"))}
        self.env.update({
            "JSD_GENERAL_STATE_DIR": str(state),
            "JSD_SERVER_PORT": str(self.port),
            "JSD_SERVER_WORKERS": str(workers),
            "JSD_LOG_FORMAT": "json",
        })
        self.process: subprocess.Popen[str] | None = None
        self.log = state.parent / f"daemon-{state.name}.log"

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jsd", *args], env=self.env, input=stdin, capture_output=True, text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        with self.log.open("a") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jsd", "serve"], env=self.env, stdout=handle, stderr=handle, text=True,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                status, _ = self.get("/readyz")
                if status == 200:
                    time.sleep(1.0)  # let the other workers bind too
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("daemon did not become ready:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            self.process = None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/", data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def operator_key(self) -> Path:
        """The file of an operator's API key; the account is made locally, as the first one is, on first need."""
        path = self.state.parent / f"operator-{self.state.name}.key"
        if not path.exists():
            made = self.cli("accounts", "create", "ops-admin", "--kind", "operator", "--out", str(path))
            assert made.returncode == 0, made.stderr
        return path

    def add_ns(self, tmp: Path) -> Net:
        """Register the NS through the API, as the operator; the daemon runs for it if it was not running."""
        net = Net(secrets.token_bytes(16), secrets.token_urlsafe(24), f"ns-{HOME}")
        (tmp / "kek").write_text(net.kek.hex())
        (tmp / "token").write_text(net.token)
        key, was_running = self.operator_key(), self.process is not None
        if not was_running:
            self.start()
        try:
            added = self.cli(
                "--api-key-file", str(key), "ns", "add", HOME, "--kek-file", str(tmp / "kek"),
                "--token-file", str(tmp / "token"),
            )  # fmt: skip
        finally:
            if not was_running:
                self.stop()
        assert added.returncode == 0, added.stderr
        return net

    def nonces(self, device: SimDevice) -> dict[str, Any]:
        """A device's nonce state, read from the database file (the API does not show it)."""
        with closing(sqlite3.connect(self.state / "jsd.sqlite3")) as db:
            row = db.execute(
                "SELECT join_nonce, last_dev_nonce FROM device_nonces WHERE dev_eui = ?", (device.dev_eui.hex(),)
            ).fetchone()
        return {"join_nonce": row[0], "last_dev_nonce": row[1]}

    def add_device(self, tmp: Path, version: str, astk: bytes, astk_label: str) -> SimDevice:
        dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
        nwk_key = secrets.token_bytes(16) if version == "1.1" else None
        keys = {"AppKey": app_key.hex()} | ({"NwkKey": nwk_key.hex()} if nwk_key else {})
        (tmp / "astk").write_text(astk.hex())
        added = self.cli(
            "devices", "add", dev_eui.hex(), "--join-eui", JOIN_EUI, "--mac-version", version, "--keys-file", "-",
            "--home-net-id", HOME, "--astk-label", astk_label, "--astk-file", str(tmp / "astk"),
            stdin=json.dumps(keys),
        )
        assert added.returncode == 0, added.stderr
        return SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, app_key, nwk_key)

    @staticmethod
    def join_body(device: SimDevice, phy: bytes | None = None) -> dict[str, Any]:
        return {
            "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": secrets.randbelow(2**31),
            "MessageType": "JoinReq", "MACVersion": device.mac_version,
            "PHYPayload": (phy if phy is not None else device.join_request()).hex(),
            "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
        }

    @staticmethod
    def scrape(text: str) -> dict[str, float]:
        """Prometheus text format into {'name{labels}': value} (labels sorted as written by the client)."""
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "state")
    try:
        yield d
    finally:
        d.stop()
