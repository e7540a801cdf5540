"""``jsd backup`` / ``jsd restore`` on the real daemon: an older backup never makes a JoinNonce come back.

N joins, backup (daemon running), M more joins, the whole state directory lost, restore, join again: the
new JoinNonce is above every JoinNonce issued before, and a JoinRequest captured after the backup is refused.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from typing import Any

from jsd_sim import SimDevice

N, M = 3, 4


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
    shown = json.loads(daemon.cli("device", "show", random_nonce.dev_eui.hex(), "--json").stdout)
    assert shown["join_nonce"] == N + 65536

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
    shown = json.loads(daemon.cli("device", "show", device.dev_eui.hex(), "--json").stdout)
    assert shown["join_nonce"] == 100
    near_end = daemon.cli("db", "after-restore", "--join-nonce-margin", str(0xFFFFFF - 50))
    assert near_end.returncode == 0 and "need new root keys" in near_end.stderr
    shown = json.loads(daemon.cli("device", "show", device.dev_eui.hex(), "--json").stdout)
    assert shown["join_nonce"] == 0xFFFFFF  # capped: the device gets no JoinNonce again rather than an old one
