"""Key rotation under join load: a closed loop of real JoinReqs runs while ``jsd rotate ...`` works on the same
database and token from another process. No join may fail, and every answer must unwrap under the key its
KEKLabel names (the device's own derivation is the reference, from jsd_sim)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from sqlalchemy import select, text

from jsd.registry import NetworkServer, NewDevice, create_engine
from jsd.registry.tables import audit_log, devices
from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


@dataclass
class Load:
    """The outcome of the closed loop: answers seen per KEK label, and anything that went wrong."""

    labels: dict[str, int] = field(default_factory=dict)
    app_labels: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    joins: int = 0


def _cli_env(server: Any) -> dict[str, str]:
    s = server.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "PROMETHEUS_"))}
    env.update({
        "JSD_GENERAL_STATE_DIR": str(s.state_dir),
        "JSD_DATABASE_URL": s.get("database", "url"),
        "JSD_HSM_MODULE": s.get("hsm", "module"),
        "JSD_HSM_TOKEN_LABEL": s.get("hsm", "token_label"),
        "JSD_HSM_PIN_FILE": s.get("hsm", "pin_file"),
        "JSD_HSM_SOFTHSM_CONF": s.get("hsm", "softhsm_conf"),
        "JSD_SERVER_PORT": "1",
    })
    return env


async def _cli(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jsd", *args], env=_cli_env(server), input=stdin, capture_output=True,
            text=True, timeout=300,
        )

    return await asyncio.to_thread(run)


async def _devices(server: Any, count: int, astk_label: str | None, owner: str | None) -> list[SimDevice]:
    made = []
    for i in range(count):
        version = "1.1" if i % 2 else "1.0.3"
        dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
        nwk_key = secrets.token_bytes(16) if version == "1.1" else None
        await server.registry.add_device(
            NewDevice(
                dev_eui=dev_eui, join_eui=bytes.fromhex(JOIN_EUI), mac_version=version, hsm_group="default",
                app_key_blob=await server.hsm.import_root_key("default", app_key),
                nwk_key_blob=await server.hsm.import_root_key("default", nwk_key) if nwk_key else None,
                home_net_id=bytes.fromhex(HOME), astk_label=astk_label, owner_account=owner,
            )
        )  # fmt: skip
        made.append(SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, app_key, nwk_key))
    return made


async def _join_loop(
    url: str, token: str, fleet: list[SimDevice], keks: dict[str, bytes], done: Callable[[], bool], load: Load
) -> None:
    """One closed-loop client: join a device, check the answer, next device, until `done()`."""
    async with aiohttp.ClientSession() as client:
        turn = 0
        while not done():
            device = fleet[turn % len(fleet)]
            turn += 1
            body = {
                "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI,
                "TransactionID": secrets.randbelow(2**31), "MessageType": "JoinReq",
                "MACVersion": device.mac_version, "PHYPayload": device.join_request().hex(),
                "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
            }  # fmt: skip
            async with client.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await response.json()
            load.joins += 1
            if answer.get("Result", {}).get("ResultCode") != "Success":
                load.failures.append(str(answer.get("Result")))
                continue
            session = device.accept(bytes.fromhex(answer["PHYPayload"]))
            envelope = answer["NwkSKey"] if "NwkSKey" in answer else answer["SNwkSIntKey"]
            expected = session.keys.nwk_s_key if "NwkSKey" in answer else session.keys.s_nwk_s_int_key
            label = envelope["KEKLabel"]
            load.labels[label] = load.labels.get(label, 0) + 1
            if label not in keks or aes_key_unwrap(keks[label], bytes.fromhex(envelope["AESKey"])) != expected:
                load.failures.append(f"network key does not unwrap under {label}")
            if "AppSKey" in answer:
                app = answer["AppSKey"]
                load.app_labels[app["KEKLabel"]] = load.app_labels.get(app["KEKLabel"], 0) + 1
                if aes_key_unwrap(keks[app["KEKLabel"]], bytes.fromhex(app["AESKey"])) != session.keys.app_s_key:
                    load.failures.append(f"AppSKey does not unwrap under {app['KEKLabel']}")


async def _ns(server: Any, label: str, kek: bytes, token: str) -> None:
    await server.hsm.import_kek(label, kek)
    await server.registry.add_network_server(
        NetworkServer(
            net_id=bytes.fromhex(HOME), name="home", kek_label=label,
            token_hash=hashlib.sha256(token.encode()).hexdigest(), cert_fingerprint=None, answer_url=None,
            async_mode=False,
        )
    )  # fmt: skip


async def test_ns_kek_rotation_under_join_load(jsd_server: Any, tmp_path: Any) -> None:
    token, old_kek, new_kek = secrets.token_urlsafe(16), secrets.token_bytes(16), secrets.token_bytes(16)
    old_label, new_label = f"ns-old-{secrets.token_hex(3)}", f"ns-new-{secrets.token_hex(3)}"
    await _ns(jsd_server, old_label, old_kek, token)
    fleet = await _devices(jsd_server, 8, None, None)
    keks = {old_label: old_kek, new_label: new_kek}
    load = Load()
    rotated = asyncio.Event()

    def done() -> bool:  # after the cut-over, until every worker cache has answered under the new label
        return rotated.is_set() and load.labels.get(new_label, 0) >= 10

    loops = [
        asyncio.create_task(_join_loop(jsd_server.url, token, fleet[i::4], keks, done, load)) for i in range(4)
    ]
    try:
        await asyncio.sleep(1.0)
        (tmp_path / "new.kek").write_text(new_kek.hex())
        before = load.joins
        result = await _cli(jsd_server, "rotate", "ns-kek", HOME, "--label", new_label, "--kek-file", str(tmp_path / "new.kek"))
        assert result.returncode == 0, result.stderr
        assert load.joins > before  # joins went on while the rotation ran
        assert f"was {old_label}" in result.stdout and new_kek.hex() not in result.stdout + result.stderr
        rotated.set()
        await asyncio.wait_for(asyncio.gather(*loops), 120)
    finally:
        for loop in loops:
            loop.cancel()
    assert load.failures == []
    assert load.labels[old_label] > 0 and load.labels[new_label] >= 10
    ns = await jsd_server.registry.network_server_by_token_hash(hashlib.sha256(token.encode()).hexdigest())
    assert ns.kek_label == new_label


async def test_astk_rotation_under_join_load(jsd_server: Any) -> None:
    token, ns_kek = secrets.token_urlsafe(16), secrets.token_bytes(16)
    ns_label = f"ns-{secrets.token_hex(4)}"
    await _ns(jsd_server, ns_label, ns_kek, token)
    account = f"farm-{secrets.token_hex(3)}"
    old, new = secrets.token_bytes(16), secrets.token_bytes(16)
    old_label, new_label = f"astk-{secrets.token_hex(8)}", f"astk-{secrets.token_hex(8)}"
    engine = create_engine(jsd_server.database.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO accounts (id, kind, name) VALUES (:a, 'subscriber', :a)"), {"a": account})
            for name, label in (("as-2025", old_label), ("as-2026", new_label)):
                await conn.execute(
                    text("INSERT INTO astks (label, account, name, origin) VALUES (:l, :a, :n, 'imported')"),
                    {"l": label, "a": account, "n": name},
                )
        await jsd_server.hsm.import_kek(old_label, old)
        await jsd_server.hsm.import_kek(new_label, new)
        fleet = await _devices(jsd_server, 12, old_label, account)
        keks = {ns_label: ns_kek, old_label: old, new_label: new}
        load = Load()
        rotated = asyncio.Event()

        def done() -> bool:
            return rotated.is_set() and load.app_labels.get(new_label, 0) >= 12

        loops = [
            asyncio.create_task(_join_loop(jsd_server.url, token, fleet[i::4], keks, done, load)) for i in range(4)
        ]
        try:
            await asyncio.sleep(1.0)
            before = load.joins
            result = await _cli(jsd_server, "rotate", "astk", account, "as-2025", "as-2026", "--batch", "3")
            assert result.returncode == 0, result.stderr
            assert load.joins > before  # joins went on while the rotation ran
            assert "12 device(s)" in result.stdout
            rotated.set()
            await asyncio.wait_for(asyncio.gather(*loops), 120)
        finally:
            for loop in loops:
                loop.cancel()
        assert load.failures == []
        assert load.app_labels[old_label] > 0 and load.app_labels[new_label] >= 12
        async with engine.connect() as conn:
            labels = set((await conn.execute(select(devices.c.astk_label).where(devices.c.owner_account == account))).scalars())
            batches = (await conn.execute(select(audit_log.c.details).where(audit_log.c.action == "astk.rotated"))).scalars().all()
        assert labels == {new_label}
        assert len(batches) == 4  # 12 devices, 3 per transaction
        again = await _cli(jsd_server, "rotate", "astk", account, "as-2025", "as-2026")
        assert again.returncode == 0 and "0 device(s)" in again.stdout
        missing = await _cli(jsd_server, "rotate", "astk", account, "as-2025", "nope")
        assert missing.returncode == 1 and "no ASTK named 'nope'" in missing.stderr
    finally:
        await engine.dispose()
