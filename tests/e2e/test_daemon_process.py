"""The real ``jsd`` executable: first start of the embedded default, operator CLI, SIGKILL and restart.

A JoinNonce handed out before the daemon was killed is never handed out again after the restart.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd_sim import SimDevice

from ..daemons import Serve, free_port

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Serve]:
    d = Serve(tmp_path / "state", log=tmp_path / "daemon.log")
    try:
        yield d
    finally:
        d.stop()


def _join(daemon: Serve, device: SimDevice, token: str) -> dict[str, Any]:
    body = {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
        "MessageType": "JoinReq", "MACVersion": device.mac_version, "PHYPayload": device.join_request().hex(),
        "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }  # fmt: skip
    result: dict[str, Any] = daemon.request("POST", "/", token, body)
    return result


def test_first_start_cli_import_join_sigkill_restart(daemon: Serve, tmp_path: Path) -> None:
    kek, astk, token = secrets.token_bytes(16), secrets.token_bytes(16), secrets.token_urlsafe(24)
    app_key = secrets.token_bytes(16)
    (tmp_path / "kek").write_text(kek.hex())
    (tmp_path / "astk").write_text(astk.hex())
    (tmp_path / "token").write_text(token)
    dev_eui = secrets.token_bytes(8)

    made = daemon.cli("accounts", "create", "admin", "--kind", "operator", "--out", str(tmp_path / "admin.key"))
    assert made.returncode == 0, made.stderr  # the first operator account: local, before any daemon ran
    assert "created SoftHSM2 token" in made.stderr
    assert (daemon.state / "jsd.sqlite3").exists() and (daemon.state / "tokens").is_dir()
    added = daemon.cli(
        "devices", "add", dev_eui.hex(), "--join-eui", JOIN_EUI, "--mac-version", "1.0.4", "--keys-file", "-",
        "--home-net-id", HOME, "--astk-label", "astk-acme", "--astk-file", str(tmp_path / "astk"),
        stdin=json.dumps({"AppKey": app_key.hex()}),
    )
    assert added.returncode == 0, added.stderr
    assert "created SoftHSM2 token" not in added.stderr

    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.4", app_key)
    daemon.start()
    operator = ("--api-key-file", str(tmp_path / "admin.key"))
    added = daemon.cli(*operator, "ns", "add", HOME, "--kek-file", str(tmp_path / "kek"), "--token-file", str(tmp_path / "token"))
    assert added.returncode == 0, added.stderr
    answer = _join(daemon, device, token)
    assert answer["Result"]["ResultCode"] == "Success", answer
    first = device.accept(bytes.fromhex(answer["PHYPayload"]))
    assert aes_key_unwrap(kek, bytes.fromhex(answer["NwkSKey"]["AESKey"])) == first.keys.nwk_s_key
    assert aes_key_unwrap(astk, bytes.fromhex(answer["AppSKey"]["AESKey"])) == first.keys.app_s_key

    daemon.kill()
    daemon.start()
    answer = _join(daemon, device, token)
    second = device.accept(bytes.fromhex(answer["PHYPayload"]))
    assert second.join_nonce > first.join_nonce
    assert _nonces(daemon, operator, dev_eui) == (second.join_nonce, second.dev_nonce)

    text = daemon.cli(*operator, "devices", "show", dev_eui.hex()).stdout  # the operator's shortcut device, as text
    assert "None" not in text and "hsm_group" not in text, text
    assert re.search(r"^astk:\s+astk-acme$", text, re.M) and re.search(rf"^home_net_id:\s+{HOME}$", text, re.M), text
    reset = daemon.cli(*operator, "devices", "reset-nonces", dev_eui.hex())
    assert reset.returncode == 0, reset.stderr
    assert _nonces(daemon, operator, dev_eui) == (second.join_nonce, None)
    unknown = daemon.cli(*operator, "devices", "show", "0102030405060708")
    assert unknown.returncode == 3 and "not found" in unknown.stderr
    daemon.stop()
    logs = daemon.log.read_text()
    assert app_key.hex() not in logs and kek.hex() not in logs and token not in logs
    assert '"result":"Success"' in logs and f'"dev_eui":"{dev_eui.hex()}"' in logs


def _nonces(daemon: Serve, operator: tuple[str, ...], dev_eui: bytes) -> tuple[int, int | None]:
    """The device's JoinNonce and last DevNonce as the operator's `devices show` prints them, checked against
    the database file."""
    shown = json.loads(daemon.cli(*operator, "devices", "show", dev_eui.hex(), "--json").stdout)
    with closing(sqlite3.connect(daemon.state / "jsd.sqlite3")) as db:
        row = db.execute("SELECT join_nonce, last_dev_nonce FROM device_nonces WHERE dev_eui = ?", (dev_eui.hex(),))
        assert (shown["join_nonce"], shown["last_dev_nonce"]) == tuple(row.fetchone())
    return int(shown["join_nonce"]), shown["last_dev_nonce"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["devices", "add", "0102", "--join-eui", JOIN_EUI, "--mac-version", "1.0.3", "--keys-file", "-"], "{}", "DevEUI must be 8 bytes"),
        (["devices", "add", "0102030405060708", "--join-eui", JOIN_EUI, "--mac-version", "1.1", "--keys-file", "-"],
         json.dumps({"AppKey": "00" * 16}), "need an NwkKey"),
        (["devices", "add", "0102030405060708", "--join-eui", JOIN_EUI, "--mac-version", "1.0.3", "--keys-file", "-"],
         "not json", "keys file must be JSON"),
        (["devices", "add", "0102030405060708", "--join-eui", JOIN_EUI, "--mac-version", "1.0.3", "--keys-file", "-"],
         json.dumps({"AppKey": "00" * 15}), "must be 16 bytes"),
        (["ns", "add", "0013", "--generate-token", "--generate-kek"], None, "NetID must be 3 bytes"),
        (["ns", "add", "000013", "--generate-kek"], None, "give a credential"),
    ],
)
def test_cli_bad_input_is_refused_clearly(daemon: Serve, args: list[str], stdin: str | None, message: str) -> None:
    result = daemon.cli(*args, stdin=stdin)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_serve_command_starts_the_embedded_default(tmp_path: Path) -> None:
    """`./scripts/serve.sh`, as the README gives it, with nothing but a state dir and a port chosen."""
    root = Path(__file__).resolve().parents[2]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2"))}
    env.update({"JSD_GENERAL_STATE_DIR": str(tmp_path / "state"), "JSD_SERVER_PORT": str(port)})
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen([str(root / "scripts" / "serve.sh")], env=env, stdout=handle, stderr=handle,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        answer: dict[str, Any] = {}
        while time.monotonic() < deadline and not answer:
            assert process.poll() is None, log.read_text()
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/", method="POST", data=json.dumps({
                        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
                        "MessageType": "HomeNSReq", "DevEUI": "0102030405060708"}).encode(),
                    headers={"Authorization": "Bearer nobody", "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(0.3)
        assert answer["Result"]["ResultCode"] == "UnknownSender", answer
        text = log.read_text()
        assert "created SoftHSM2 token 'jsd'" in text and "creating SQLite database" in text
        assert (tmp_path / "state" / "jsd.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
