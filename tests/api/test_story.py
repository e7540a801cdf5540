"""The whole ownership story through real HTTP, on SQLite and PostgreSQL (issue 4, "Done means").

Operator makes a manufacturer and two subscribers → the manufacturer imports (single, CSV, JSON Lines; imported,
generated and secure-element keys) → a subscriber claims with a token and with a TR005 QR string → the token is
dead for every device → NetID + generated ASTK → a real JoinReq from the home NS succeeds and the AppSKey unwraps
with the ASTK exported to the subscriber → release issues a new token, the old owner loses the device, and the
new token claims it. The device side is `jsd_sim` (its own crypto); the NS side unwraps with `cryptography`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd.lorawan.tr005 import DeviceQr, build_qr
from jsd_sim import SimDevice
from jsd_sim.device import dev_nonce_is_counter

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
DEVICE_MEMBERS = {
    "dev_eui", "join_eui", "mac_version", "name", "admin_info", "secure_element", "profile_id", "serial", "state",
    "manufacturer", "owner", "home_net_id", "astk", "keys_exported", "created_at", "claimed_at",
}  # fmt: skip


def join_request(dev: SimDevice, net_id: str) -> dict[str, Any]:
    return {
        "ProtocolVersion": "1.0",
        "SenderID": net_id,
        "ReceiverID": dev.join_eui.hex(),
        "TransactionID": secrets.randbelow(2**32),
        "MessageType": "JoinReq",
        "MACVersion": dev.mac_version,
        "PHYPayload": dev.join_request().hex(),
        "DevEUI": dev.dev_eui.hex(),
        "DevAddr": "26011bda",
        "DLSettings": "00",
        "RxDelay": 1,
    }


async def lbi_post(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def se_root_key(lmk: bytes, tkm: bytes, block_type: int) -> bytes:
    """Algorithm 1 of jsd.ownership.se, computed independently: AES-ECB(LMK, type || SE_ID || SE_INFO || 0^5)."""
    block = bytes([block_type]) + tkm[2:] + tkm[:2] + bytes(5)
    encryptor = Cipher(algorithms.AES(lmk), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


async def test_import_claim_join_release(api: Any, eui: Any) -> None:
    # -- the operator sets up accounts and the home NS --------------------------------------------------------
    acme = await api.account("acme", "manufacturer")
    alice = await api.account("alice", "subscriber")
    bob = await api.account("bob", "subscriber")
    me = await api.ok("GET", "/me", acme)
    assert me["account"] == "acme" and me["kind"] == "manufacturer" and "claim" not in me["scopes"]
    ns_token, ns_kek, ns_label = await api.network_server(HOME)

    # -- pre-commissioning: one device alone ------------------------------------------------------------------
    single = SimDevice(bytes.fromhex(eui()), bytes.fromhex(JOIN_EUI), "1.0.3", secrets.token_bytes(16))
    created = await api.call(
        "POST",
        "/devices",
        acme,
        {
            "dev_eui": single.dev_eui.hex().upper(),
            "join_eui": JOIN_EUI,
            "mac_version": "1.0.3",
            "app_key": "0x" + single.app_key.hex(),
            "name": "meter 1",
            "serial": "sn0001",
        },  # fmt: skip
    )
    assert created.status == 201, created.body
    assert created.body["status"] == "created" and created.body["dev_eui"] == single.dev_eui.hex()
    assert "app_key" not in created.body and len(created.body["owner_token"]) == 32
    assert created.headers["Cache-Control"] == "no-store"
    single_token = created.body["owner_token"]

    # -- CSV: imported 1.1 keys, generated keys, a secure-element device --------------------------------------
    lmk = secrets.token_bytes(16)
    nibbles = secrets.token_bytes(2)
    se_info = bytes([nibbles[0], (nibbles[1] & 0xF0) | 0x1])  # DERIVE_ALGO_ID 1
    tkm = se_info + secrets.token_bytes(8)
    await api.server.hsm.import_lot_master_key(f"lmk-{tkm[0] >> 4:x}-{tkm[0] & 0xF:x}-{tkm[1] >> 4:x}", lmk)
    v11 = SimDevice(
        bytes.fromhex(eui()), bytes.fromhex(JOIN_EUI), "1.1", secrets.token_bytes(16), secrets.token_bytes(16)
    )
    gen_eui, se_eui = eui(), eui()
    csv_text = (
        "dev_eui,join_eui,mac_version,app_key,nwk_key,generate_keys,secure_element,tkm_info,name\n"
        f"{v11.dev_eui.hex()},{JOIN_EUI},1.1,{v11.app_key.hex()},{v11.nwk_key.hex() if v11.nwk_key else ''},,,,v11\n"
        f"{gen_eui},{JOIN_EUI},1.0.4,,,true,,,generated\n"
        f"{se_eui},{JOIN_EUI},1.0.3,,,,true,{tkm.hex()},secure\n"
    )
    reply = await api.call("POST", "/devices/import", acme, data=csv_text, headers={"Content-Type": "text/csv"})
    assert reply.status == 200 and reply.content_type == "application/x-ndjson", reply.body
    assert reply.headers["Cache-Control"] == "no-store"
    *lines, summary = reply.body
    assert summary == {"summary": {"created": 3, "unchanged": 0}}
    by_eui = {line["dev_eui"]: line for line in lines}
    assert [line["line"] for line in lines] == [2, 3, 4]
    assert "app_key" not in by_eui[v11.dev_eui.hex()]
    generated = by_eui[gen_eui]
    assert len(bytes.fromhex(generated["app_key"])) == 16 and "nwk_key" not in generated
    assert by_eui[se_eui]["owner_token"] == tkm.hex().upper()
    assert (await api.ok("GET", f"/devices/{gen_eui}", acme))["keys_exported"] is True

    # -- JSON Lines, twice: the re-run changes nothing and hands out no token ---------------------------------
    jsonl_euis = [eui(), eui()]
    jsonl = "".join(
        f'{{"dev_eui": "{e}", "join_eui": "{JOIN_EUI}", "mac_version": "1.0.2", "generate_keys": true}}\n'
        for e in jsonl_euis
    )
    first = await api.call(
        "POST", "/devices/import", acme, data=jsonl, headers={"Content-Type": "application/x-ndjson"}
    )
    assert first.status == 200 and first.body[-1] == {"summary": {"created": 2, "unchanged": 0}}
    again = await api.call("POST", "/devices/import", acme, data=jsonl, headers={"Content-Type": "application/jsonl"})
    assert again.status == 200 and again.body[-1] == {"summary": {"created": 0, "unchanged": 2}}
    assert all(line["status"] == "unchanged" and "owner_token" not in line for line in again.body[:-1])

    # -- the manufacturer sees its unclaimed devices, never a key ---------------------------------------------
    listed = await api.ok("GET", "/devices", acme)
    assert {d["dev_eui"] for d in listed["devices"]} == {single.dev_eui.hex(), v11.dev_eui.hex(), gen_eui, se_eui,
                                                         *jsonl_euis}  # fmt: skip
    assert all(set(d) == DEVICE_MEMBERS for d in listed["devices"]) and listed["next"] is None
    shown = await api.ok("GET", f"/devices/{single.dev_eui.hex()}", acme)
    assert shown["state"] == "unclaimed" and shown["manufacturer"] == "acme" and shown["owner"] is None
    assert shown["serial"] == "SN0001" and TIME.fullmatch(shown["created_at"])
    assert single.app_key.hex() not in (await api.call("GET", "/devices?limit=1000", acme)).raw.decode()

    # -- claims: by token, then by TR005 QR; a used token is dead for every device ----------------------------
    claimed = await api.ok("POST", "/claims", alice, {"dev_eui": single.dev_eui.hex(), "owner_token": single_token})
    assert claimed["state"] == "claimed" and claimed["owner"] == "alice" and claimed["manufacturer"] is None
    assert TIME.fullmatch(claimed["claimed_at"]) and TIME.fullmatch(claimed["created_at"])  # one time format
    for key, dev_eui in ((bob, single.dev_eui.hex()), (alice, single.dev_eui.hex()), (bob, gen_eui)):
        refused = await api.call("POST", "/claims", key, {"dev_eui": dev_eui, "owner_token": single_token})
        assert (refused.status, refused.problem) == (403, "claim-failed")
    assert (await api.call("GET", f"/devices/{single.dev_eui.hex()}", acme)).problem == "not-found"
    qr = build_qr(DeviceQr(bytes.fromhex(JOIN_EUI), v11.dev_eui, owner_token=by_eui[v11.dev_eui.hex()]["owner_token"]))
    assert (await api.ok("POST", "/claims", alice, {"qr": qr}))["owner"] == "alice"
    se_claim = await api.ok("POST", "/claims", alice, {"dev_eui": se_eui, "owner_token": tkm.hex()})
    assert se_claim["secure_element"] is True
    assert {d["dev_eui"] for d in (await api.ok("GET", "/devices", alice))["devices"]} == {
        single.dev_eui.hex(), v11.dev_eui.hex(), se_eui}  # fmt: skip

    # -- NetID and a generated ASTK, exported once to the subscriber ------------------------------------------
    astk = await api.call("POST", "/astks", alice, {"name": "as-main"})
    assert astk.status == 201 and astk.body["origin"] == "generated" and astk.body["exported"] is False
    exported = await api.ok("POST", "/astks/as-main/export", alice)
    astk_key = bytes.fromhex(exported["key"])
    assert (await api.call("POST", "/astks/as-main/export", alice)).problem == "already-exported"
    for dev in (single, v11):
        device = await api.ok("PUT", f"/devices/{dev.dev_eui.hex()}/net-id", alice, {"net_id": HOME})
        assert device["home_net_id"] == HOME
        assert (await api.ok("PUT", f"/devices/{dev.dev_eui.hex()}/astk", alice, {"astk": "as-main"}))[
            "astk"
        ] == "as-main"
    await api.ok("PUT", f"/devices/{se_eui}/net-id", alice, {"net_id": HOME})
    await api.ok("PUT", f"/devices/{se_eui}/astk", alice, {"astk": "as-main"})

    # -- real joins from the home NS: keys agree with the device, the AppSKey opens with the ASTK -------------
    se_dev = SimDevice(bytes.fromhex(se_eui), bytes.fromhex(JOIN_EUI), "1.0.3", se_root_key(lmk, tkm, 1))
    sessions = {}
    for dev in (single, v11, se_dev):
        answer = await lbi_post(api.server.url, join_request(dev, HOME), ns_token)
        assert answer["Result"] == {"ResultCode": "Success"}, answer
        session = dev.accept(bytes.fromhex(answer["PHYPayload"]))
        sessions[dev.dev_eui.hex()] = (session, 0 if dev_nonce_is_counter(dev.mac_version) else 1)
        assert aes_key_unwrap(astk_key, bytes.fromhex(answer["AppSKey"]["AESKey"])) == session.keys.app_s_key
        network_key = "FNwkSIntKey" if session.opt_neg else "NwkSKey"
        assert answer[network_key]["KEKLabel"] == ns_label
        assert len(aes_key_unwrap(ns_kek, bytes.fromhex(answer[network_key]["AESKey"]))) == 16
    # the operator sees the nonce state the joins left; the owner may not (admin scope)
    for dev_eui, (session, remembered) in sessions.items():  # random DevNonces (1.0.0-1.0.3) are remembered
        book = await api.ok("GET", f"/devices/{dev_eui}/nonces", api.operator)
        assert book == {"dev_eui": dev_eui, "join_nonce": session.join_nonce,
                        "last_dev_nonce": session.dev_nonce, "used_dev_nonces": remembered}, book  # fmt: skip
    assert (await api.call("GET", f"/devices/{single.dev_eui.hex()}/nonces", alice)).problem == "forbidden"
    assert (await api.call("GET", "/devices/0102030405060708/nonces", api.operator)).problem == "not-found"
    events = await api.ok("GET", f"/events?dev_eui={single.dev_eui.hex()}", alice)
    assert [e["type"] for e in events["events"]] == [
        "device.claimed", "claim.failed", "device.netid_set", "device.astk_set", "join.accepted"]  # fmt: skip
    audit = await api.ok("GET", f"/audit?dev_eui={single.dev_eui.hex()}", alice)
    assert "device.claimed" in [e["action"] for e in audit["entries"]]

    # -- release: a new token; the old owner loses the device; the new token works once ----------------------
    released = await api.ok("POST", f"/devices/{single.dev_eui.hex()}/release", alice)
    new_token = released["owner_token"]
    assert new_token != single_token and released["device"]["state"] == "unclaimed"
    for method, path, body in (
        ("GET", f"/devices/{single.dev_eui.hex()}", None),
        ("PUT", f"/devices/{single.dev_eui.hex()}/net-id", {"net_id": HOME}),
        ("POST", f"/devices/{single.dev_eui.hex()}/release", None),
    ):
        gone = await api.call(method, path, alice, body) if body else await api.call(method, path, alice)
        assert gone.problem == "not-found"
    old = await api.call("POST", "/claims", bob, {"dev_eui": single.dev_eui.hex(), "owner_token": single_token})
    assert old.problem == "claim-failed"
    reclaimed = await api.ok("POST", "/claims", bob, {"dev_eui": single.dev_eui.hex(), "owner_token": new_token})
    assert reclaimed["owner"] == "bob" and reclaimed["home_net_id"] is None and reclaimed["astk"] is None
    again_claim = await api.call("POST", "/claims", alice, {"dev_eui": single.dev_eui.hex(), "owner_token": new_token})
    assert again_claim.problem == "claim-failed"
    bob_events = await api.ok("GET", "/events", bob)
    assert [e["type"] for e in bob_events["events"] if e["type"] != "claim.failed"] == ["device.claimed"]
    assert all(e["data"] == {"reason": e["data"]["reason"]} for e in bob_events["events"][:-1])
