"""``jsd backup`` / ``jsd restore`` on the real daemon: an older backup never makes a JoinNonce come back.

N joins, backup (daemon running), M more joins, the whole state directory lost, restore, join again: the
new JoinNonce is above every JoinNonce issued before, and a JoinRequest captured after the backup is refused.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from jsd_sim import SimDevice

N, M = 3, 4


def daemon_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _join(daemon: Any, net: Any, device: SimDevice, phy: bytes | None = None) -> dict[str, Any]:
    return daemon.post(daemon.join_body(device, phy), net.token)


def test_restore_of_an_older_backup_never_reissues_a_join_nonce(daemon: Any, tmp_path: Path) -> None:
    net = daemon.add_ns(tmp_path)
    astk = secrets.token_bytes(16)
    counter = daemon.add_device(tmp_path, "1.0.4", astk, "astk-b")
    random_nonce = daemon.add_device(tmp_path, "1.0.3", astk, "astk-b")
    daemon.start()
    issued: list[int] = []
    for _ in range(N):
        for device in (counter, random_nonce):
            answer = _join(daemon, net, device)
            assert answer["Result"]["ResultCode"] == "Success", answer
            issued.append(device.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce)

    running = daemon.cli("backup", "--out", str(tmp_path / "backup"))
    assert running.returncode == 0, running.stderr
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["devices"] == 2 and manifest["highest_join_nonce"] == N
    assert manifest["hsm"]["kind"] == "softhsm2-embedded" and "tokens" in {p.split("/")[0] for p in manifest["files"]}
    assert (tmp_path / "backup").stat().st_mode & 0o077 == 0
    assert daemon.cli("backup", "--out", str(tmp_path / "backup")).returncode != 0  # never overwrites
    newer = tmp_path / "newer"
    shutil.copytree(tmp_path / "backup", newer)
    (newer / "manifest.json").write_text(json.dumps(manifest | {"schema_revision": "9999"}))
    refused = daemon.cli("restore", str(newer))
    assert refused.returncode == 1 and "unknown to this version" in refused.stderr
    (newer / "manifest.json").write_text(json.dumps(manifest))
    with (newer / "jsd.sqlite3").open("r+b") as damaged:
        damaged.seek(200)
        damaged.write(b"\xff")
    refused = daemon.cli("restore", str(newer))
    assert refused.returncode == 1 and "jsd.sqlite3 of the backup is missing or damaged" in refused.stderr

    captured = b""
    for _ in range(M):
        for device in (counter, random_nonce):
            phy = device.join_request()
            if device is counter:
                captured = phy
            answer = _join(daemon, net, device, phy)
            assert answer["Result"]["ResultCode"] == "Success", answer
            issued.append(device.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce)
    refused = daemon.cli("restore", str(tmp_path / "backup"))
    assert refused.returncode != 0 and "stop it before restoring" in refused.stderr
    daemon.stop()

    shutil.rmtree(daemon.state)  # the disk is lost: database, token and PINs
    restored = daemon.cli("restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stderr
    assert "SoftHSM2 token restored" in restored.stdout and "JoinNonce +65536" in restored.stdout
    assert daemon.nonces(random_nonce)["join_nonce"] == N + 65536

    daemon.start()
    answer = _join(daemon, net, random_nonce)
    assert answer["Result"]["ResultCode"] == "Success", answer
    assert random_nonce.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce > max(issued)

    # The counter device's JoinRequest captured after the backup (DevNonce N+M-1 < N-1+16) is refused ...
    replay = _join(daemon, net, counter, captured)
    assert replay["Result"]["ResultCode"] == "JoinReqFailed", replay
    # ... and so is its own next one, until its counter passes the raised bar (the documented cost).
    assert _join(daemon, net, counter)["Result"]["ResultCode"] == "JoinReqFailed"
    counter.next_dev_nonce = (N - 1) + 16 + 1
    answer = _join(daemon, net, counter)
    assert answer["Result"]["ResultCode"] == "Success", answer
    assert counter.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce > max(issued)


def test_db_upgrade_and_after_restore_by_hand(daemon: Any, tmp_path: Path) -> None:
    first = daemon.cli("db", "upgrade")
    assert first.returncode == 0, first.stderr
    again = daemon.cli("db", "upgrade")
    assert again.returncode == 0 and "already at" in again.stdout
    daemon.add_ns(tmp_path)
    device = daemon.add_device(tmp_path, "1.1", secrets.token_bytes(16), "astk-u")
    bad = daemon.cli("db", "after-restore", "--join-nonce-margin", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    done = daemon.cli("db", "after-restore", "--join-nonce-margin", "100")
    assert done.returncode == 0, done.stderr
    assert daemon.nonces(device)["join_nonce"] == 100
    near_end = daemon.cli("db", "after-restore", "--join-nonce-margin", str(0xFFFFFF - 50))
    assert near_end.returncode == 0 and "need new root keys" in near_end.stderr
    assert daemon.nonces(device)["join_nonce"] == 0xFFFFFF  # capped: the device gets no JoinNonce again rather than an old one


async def test_backup_and_restore_of_a_configured_database(database: Any, hsm_state: Path, tmp_path: Path) -> None:
    """SQLite file or PostgreSQL schema named in the configuration (pg_dump/pg_restore), external HSM."""
    import hashlib
    import os
    import subprocess
    import sys

    import aiohttp
    from aiohttp import web

    from jsd.app import HSM, REGISTRY, build_app, softhsm_module
    from jsd.config import load_settings
    from jsd.registry import NetworkServer, NewDevice

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "PROMETHEUS_"))}
    port = daemon_port()
    env.update({
        "JSD_GENERAL_STATE_DIR": str(tmp_path / "state"), "JSD_DATABASE_URL": database.url,
        "JSD_HSM_MODULE": softhsm_module(), "JSD_HSM_TOKEN_LABEL": "jsd-test",
        "JSD_HSM_PIN_FILE": str(hsm_state / "hsm-pin"), "JSD_HSM_SOFTHSM_CONF": os.environ["SOFTHSM2_CONF"],
        "JSD_SERVER_PORT": str(port),
    })  # fmt: skip
    settings = load_settings(None, environ=env)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jsd", *args], env=env, capture_output=True, text=True, timeout=300)

    async def started() -> web.AppRunner:
        runner = web.AppRunner(build_app(settings), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    token, kek, app_key = secrets.token_urlsafe(16), secrets.token_bytes(16), secrets.token_bytes(16)
    device = SimDevice(secrets.token_bytes(8), bytes.fromhex("70b3d57ed0000001"), "1.0.2", app_key)
    issued: list[int] = []

    async def joins(count: int) -> None:
        async with aiohttp.ClientSession() as client:
            for _ in range(count):
                body = {
                    "ProtocolVersion": "1.0", "SenderID": "000013", "ReceiverID": "70b3d57ed0000001",
                    "TransactionID": 1, "MessageType": "JoinReq", "MACVersion": "1.0.2",
                    "PHYPayload": device.join_request().hex(), "DevEUI": device.dev_eui.hex(),
                    "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
                }  # fmt: skip
                async with client.post(f"http://127.0.0.1:{port}/", json=body,
                                       headers={"Authorization": f"Bearer {token}"}) as response:
                    answer = await response.json()
                assert answer["Result"]["ResultCode"] == "Success", answer
                issued.append(device.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce)

    runner = await started()
    try:
        app = runner.app
        await app[HSM].ensure_storage_kek("default")
        label = f"ns-{secrets.token_hex(4)}"
        await app[HSM].import_kek(label, kek)
        await app[REGISTRY].add_network_server(NetworkServer(
            net_id=bytes.fromhex("000013"), name="home", kek_label=label,
            token_hash=hashlib.sha256(token.encode()).hexdigest(), cert_fingerprint=None, answer_url=None,
            async_mode=False))  # fmt: skip
        await app[REGISTRY].add_device(NewDevice(
            dev_eui=device.dev_eui, join_eui=device.join_eui, mac_version="1.0.2", hsm_group="default",
            app_key_blob=await app[HSM].import_root_key("default", app_key), home_net_id=bytes.fromhex("000013")))  # fmt: skip
        await joins(N)
        taken = await asyncio.to_thread(cli, "backup", "--out", str(tmp_path / "backup"))
        assert taken.returncode == 0, taken.stderr
        assert "the HSM is not in this backup" in taken.stderr
        await joins(M)
    finally:
        await runner.cleanup()
    restored = await asyncio.to_thread(cli, "restore", str(tmp_path / "backup"))
    assert restored.returncode == 0, restored.stderr
    runner = await started()
    try:
        await joins(1)
    finally:
        await runner.cleanup()
    assert issued[-1] == N + 65536 + 1 > max(issued[:-1])
