"""The README's journeys, run exactly as written, so the README cannot drift from what works.

Each ``sh`` block marked ``<!-- journey: NAME -->`` in README.md is run with bash, in README order, in one
working directory (later journeys use the files earlier ones made), against a real daemon started here the way
the quick start starts it: ``jsd serve`` on the embedded default (SQLite + a SoftHSM2 token in its state
directory), with a broker. The environment is what the README tells a user to set: the state directory
(``JSD_GENERAL_STATE_DIR``), the port (``JSD_SERVER_PORT``) and the broker (``JSD_MQTT_HOST``/``PORT``; a
private Mosquitto on a free port), plus a home directory of its own for the ``jsd login`` profile. After each
journey the test checks what it should have done, and at the end a real join (``jsd_sim``) of the device the
operator added proves the KEK and ASTK files the journeys wrote are the ones the daemon uses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd_sim import SimDevice

ROOT = Path(__file__).resolve().parents[1]
JOURNEYS = ("setup", "maker", "subscriber", "integrator", "operator")
MARK = re.compile(r"<!-- journey: ([a-z-]+) -->\n```sh\n(.*?)\n```", re.S)


def journey_blocks(text: str) -> dict[str, str]:
    """The marked ``sh`` blocks of the README by journey name (several blocks of one journey are joined)."""
    blocks: dict[str, str] = {}
    for name, body in MARK.findall(text):
        blocks[name] = blocks.get(name, "") + body + "\n"
    return blocks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[Any], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}:\n{log.read_text()}")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@dataclass
class Site:
    """The user's machine: a working directory, the environment the README asks for, the running daemon."""

    work: Path
    env: dict[str, str]
    port: int
    daemon_log: Path

    def run(self, script: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-x", "-c", script],
            cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def jsd_json(self, *args: str, key: str) -> Any:
        env = self.env | {"JSD_API_KEY_FILE": key}
        result = subprocess.run(
            [sys.executable, "-m", "jsd", *args, "--json"], cwd=self.work, env=env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    broker_port, port = _free_port(), _free_port()
    (tmp_path / "mosquitto.conf").write_text(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n")
    broker_log = tmp_path / "mosquitto.log"
    with broker_log.open("w") as handle:
        broker = subprocess.Popen(
            ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2", "XDG_CONFIG"))}
    env.update(
        {
            "HOME": str(home),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "JSD_GENERAL_STATE_DIR": str(tmp_path / "state"),
            "JSD_SERVER_PORT": str(port),
            "JSD_SERVER_WORKERS": "1",
            "JSD_MQTT_HOST": "127.0.0.1",
            "JSD_MQTT_PORT": str(broker_port),
        }
    )
    daemon_log = tmp_path / "daemon.log"
    daemon = None
    try:
        _wait_for_port(broker_port, broker, broker_log)
        with daemon_log.open("w") as handle:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "jsd", "serve"], cwd=work, env=env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_for_port(port, daemon, daemon_log)
        yield Site(work, env, port, daemon_log)
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop(broker)


def test_the_readme_marks_every_journey_once() -> None:
    text = (ROOT / "README.md").read_text()
    names = [name for name, _ in MARK.findall(text)]
    assert names == list(JOURNEYS), "README journeys: mark each `sh` block with <!-- journey: NAME -->"
    assert text.count("<!-- journey:") == len(JOURNEYS), "a journey mark not directly before a ```sh block"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _lbi_join(port: int, device: SimDevice, net_id: str, token: str) -> dict[str, Any]:
    body = {
        "ProtocolVersion": "1.0", "SenderID": net_id, "ReceiverID": device.join_eui.hex(), "TransactionID": 7,
        "MessageType": "JoinReq", "MACVersion": device.mac_version, "PHYPayload": device.join_request().hex(),
        "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }  # fmt: skip
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/lbi", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_every_readme_journey_runs_as_written(site: Site) -> None:
    blocks = journey_blocks((ROOT / "README.md").read_text())
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    for name in JOURNEYS:
        result = site.run(blocks[name])
        assert result.returncode == 0, (
            f"journey {name!r} failed (exit {result.returncode})\n--- stdout\n{result.stdout}\n--- stderr\n"
            f"{result.stderr}\n--- daemon log (tail)\n{site.daemon_log.read_text()[-3000:]}"
        )
        for noise in ("Traceback", "alembic", "INFO", "GetPassWarning", "Aborted!", "Error:"):
            assert noise not in result.stderr, f"journey {name!r}: {noise!r} on stderr:\n{result.stderr}"
        outputs[name] = result
    work = site.work

    # setup: three keys in 0600 files, the profile names the admin key (not the key itself)
    for key in ("admin.key", "acme.key", "farm.key"):
        assert _mode(work / key) == 0o600
    profile = (Path(site.env["HOME"]) / ".config" / "jsd" / "profile.toml").read_text()
    assert str(work / "admin.key") in profile and (work / "admin.key").read_text().strip() not in profile
    assert "admin (operator)" in outputs["setup"].stdout

    # maker: two devices created, their answer kept in a 0600 file, two labels
    answer = work / "batch.csv.tokens.jsonl"
    assert _mode(answer) == 0o600
    lines = [json.loads(line) for line in answer.read_text().splitlines()]
    assert lines[-1] == {"summary": {"created": 2, "unchanged": 0}}
    assert all(len(line["owner_token"]) == 32 for line in lines[:-1]) and lines[1]["nwk_key"]
    assert (work / "labels" / "0004A30B001C0530.svg").exists() and (work / "labels" / "0004A30B001C0531.png").exists()

    # subscriber: the NetID warning, the ASTK handed out once, and the device back with farm after the re-claim
    assert "warning: no network server with NetID 000000 is registered yet" in outputs["subscriber"].stderr
    assert _mode(work / "as-farm.key") == 0o600 and _mode(work / "next-owner.token") == 0o600
    device = site.jsd_json("devices", "show", "0004a30b001c0530", key=str(work / "farm.key"))
    assert device["owner"] == "farm" and device["home_net_id"] is None and device["astk"] is None  # release cleared
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", device["claimed_at"])
    events = site.jsd_json("events", "--dev-eui", "0004a30b001c0530", key=str(work / "farm.key"))["events"]
    assert [e["type"] for e in events] == [
        "device.claimed", "device.netid_set", "device.astk_set", "device.released", "device.claimed",
    ]  # fmt: skip

    # integrator: the reply over MQTT carries the claimed device
    reply = json.loads((work / "reply.json").read_text())
    assert reply["ok"] is True and reply["request_id"] == "claim-0531"
    assert reply["result"]["dev_eui"] == "0004a30b001c0531" and reply["result"]["owner"] == "farm"
    assert "device.claimed" in outputs["integrator"].stdout

    # operator: KEK and token in 0600 files, the ChirpStack snippet made of them, the shortcut device shown
    kek_file, token_file = work / "chirpstack" / "ns-000000.kek", work / "chirpstack" / "ns-000000.token"
    assert _mode(kek_file) == 0o600 and _mode(token_file) == 0o600
    kek, token = bytes.fromhex(kek_file.read_text().strip()), token_file.read_text().strip()
    snippet = (work / "chirpstack" / "join_server.toml").read_text()
    assert kek.hex() in snippet and f"Bearer {token}" in snippet
    shown = outputs["operator"].stdout
    assert re.search(r"^astk:\s+as-acme$", shown, re.M) and re.search(r"^home_net_id:\s+000000$", shown, re.M)

    # and the files the journeys wrote are the daemon's: a real join of the shortcut device unwraps with them
    astk = bytes.fromhex((work / "as-acme.key").read_text().strip())
    sim = SimDevice(bytes.fromhex("0102030405060708"), bytes.fromhex("70b3d57ed0000001"), "1.0.3",
                    bytes.fromhex("000102030405060708090a0b0c0d0e0f"))  # fmt: skip
    joined = _lbi_join(site.port, sim, "000000", token)
    assert joined["Result"]["ResultCode"] == "Success", joined
    session = sim.accept(bytes.fromhex(joined["PHYPayload"]))
    assert aes_key_unwrap(kek, bytes.fromhex(joined["NwkSKey"]["AESKey"])) == session.keys.nwk_s_key
    assert aes_key_unwrap(astk, bytes.fromhex(joined["AppSKey"]["AESKey"])) == session.keys.app_s_key
