"""The real ``jsd`` executable on a state directory of its own: ``jsd serve`` with workers, CLI commands, HTTP."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jsd_sim import SimDevice

from ..daemons import Serve

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


@dataclass
class Net:
    kek: bytes
    token: str
    label: str


class Daemon(Serve):
    """Runs ``jsd`` commands against one state directory (embedded SQLite + SoftHSM2), as an operator would."""

    def __init__(self, state: Path, workers: int = 2) -> None:
        super().__init__(state, workers=workers, log=state.parent / f"daemon-{state.name}.log")

    def post(self, body: dict[str, Any], token: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/", token, body)
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
