"""The real ``jsd`` executable on a state directory of its own: ``jsd serve`` with workers, CLI commands, HTTP."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
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

    def add_ns(self, tmp: Path) -> Net:
        net = Net(secrets.token_bytes(16), secrets.token_urlsafe(24), f"ns-{HOME}")
        (tmp / "kek").write_text(net.kek.hex())
        (tmp / "token").write_text(net.token)
        added = self.cli("ns", "add", HOME, "--kek-file", str(tmp / "kek"), "--token-file", str(tmp / "token"))
        assert added.returncode == 0, added.stderr
        return net

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
