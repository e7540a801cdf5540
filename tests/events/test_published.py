"""Every event type reaches the broker with its documented payload, from the real app (SQLite and PostgreSQL).

Ownership changes go through the ownership service of the running app, joins through its LBI endpoint with
`jsd_sim` devices; a subscriber on the shared Mosquitto checks topic, schema, values and order, and that
every event in the database was published and none carries a key or token.
"""

from __future__ import annotations

import secrets
from typing import Any

import aiohttp
import pytest

from jsd.events.schema import EVENT_TYPES, check
from jsd.ownership import ClaimFailed
from jsd_sim import SimDevice

JOIN_EUI = "70b3d57ed0000001"
HOME = "000013"


async def _lbi(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def _request(sim: SimDevice, phy: bytes, message_type: str = "JoinReq") -> dict[str, Any]:
    return {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": secrets.randbelow(2**31),
        "MessageType": message_type, "MACVersion": sim.mac_version, "PHYPayload": phy.hex(),
        "DevEUI": sim.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }  # fmt: skip


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_every_event_type_arrives_with_its_documented_payload(
    daemon: Any, subscribe: Any, prefix: str, protocol: str
) -> None:
    d = await daemon(mqtt__host="127.0.0.1", mqtt__topic_prefix=prefix, mqtt__protocol=protocol)
    sub = await subscribe(f"{prefix}/#")
    await sub.wait(lambda ms: any(m.topic == f"{prefix}/status" and m.payload == b"online" for m in ms))
    maker, _ = await d.account("maker", "manufacturer")
    alice, alice_key = await d.account("alice", "subscriber")
    service = d.service

    secrets_seen: list[str] = [alice_key]
    keys = {"a": secrets.token_bytes(16), "b_app": secrets.token_bytes(16), "b_nwk": secrets.token_bytes(16)}
    eui_a, eui_b, eui_c = (secrets.token_bytes(8) for _ in range(3))
    a = await service.devices.add_device(maker, {"dev_eui": eui_a.hex(), "join_eui": JOIN_EUI, "mac_version": "1.0.3",
                                         "app_key": keys["a"].hex()})  # fmt: skip
    b = await service.devices.add_device(maker, {"dev_eui": eui_b.hex(), "join_eui": JOIN_EUI, "mac_version": "1.1",
                                         "app_key": keys["b_app"].hex(), "nwk_key": keys["b_nwk"].hex()})  # fmt: skip
    c = await service.devices.add_device(maker, {"dev_eui": eui_c.hex(), "join_eui": JOIN_EUI, "mac_version": "1.1",
                                         "generate_keys": True})  # fmt: skip
    assert c.app_key is not None and c.nwk_key is not None
    secrets_seen += [t for t in (a.owner_token, b.owner_token, c.owner_token) if t] + [c.app_key.hex(), c.nwk_key.hex()]
    secrets_seen += [k.hex() for k in keys.values()]
    for eui, imported in ((eui_a, a), (eui_b, b)):
        assert imported.owner_token is not None
        await service.claims.claim(alice, eui, imported.owner_token)
        await service.devices.set_net_id(alice, eui, bytes.fromhex(HOME))
    kek, astk, ns_token = secrets.token_bytes(16), secrets.token_bytes(16), secrets.token_urlsafe(24)
    secrets_seen += [kek.hex(), astk.hex(), ns_token]
    await service.networks.add_network_server(
        d.operator, {"net_id": HOME, "kek_label": f"ns-{secrets.token_hex(4)}", "kek": kek.hex(), "token": ns_token}
    )
    await service.astks.create_astk(alice, "as-alice", astk)
    for eui in (eui_a, eui_b):
        await service.devices.set_astk(alice, eui, "as-alice")

    sim_a = SimDevice(eui_a, bytes.fromhex(JOIN_EUI), "1.0.3", keys["a"])
    sim_b = SimDevice(eui_b, bytes.fromhex(JOIN_EUI), "1.1", keys["b_app"], keys["b_nwk"])
    phy = sim_a.join_request()
    accepted_a = await _lbi(d.url, ns_token, _request(sim_a, phy))
    assert accepted_a["Result"]["ResultCode"] == "Success", accepted_a
    replayed = await _lbi(d.url, ns_token, _request(sim_a, phy))
    assert replayed["Result"]["ResultCode"] != "Success"
    accepted_b = await _lbi(d.url, ns_token, _request(sim_b, sim_b.join_request()))
    assert accepted_b["Result"]["ResultCode"] == "Success", accepted_b
    sim_b.accept(bytes.fromhex(accepted_b["PHYPayload"]))
    rejoined = await _lbi(d.url, ns_token, _request(sim_b, sim_b.rejoin_request(0), "RejoinReq"))
    assert rejoined["Result"]["ResultCode"] == "Success", rejoined
    answered = await _lbi(d.url, ns_token, {
        "ProtocolVersion": "1.0", "SenderID": "as.example.org", "ReceiverID": JOIN_EUI, "TransactionID": 9,
        "MessageType": "AppSKeyReq", "DevEUI": eui_b.hex(), "SessionKeyID": accepted_b["SessionKeyID"],
    })  # fmt: skip
    assert answered["Result"]["ResultCode"] == "Success", answered
    _, token = await service.claims.release(alice, eui_a)
    secrets_seen.append(token)
    with pytest.raises(ClaimFailed):
        await service.claims.claim(alice, eui_c, "00" * 16)
    await service.devices.set_net_id(alice, eui_b, None)

    stored = await d.store.events(account=None, after=None, limit=1000)
    assert {e.type for e in stored} == {t.name for t in EVENT_TYPES}
    events_prefix = f"{prefix}/accounts/"
    await sub.wait(
        lambda ms: (
            {e.event_id for e in stored} <= {m.json["event_id"] for m in ms if m.topic.startswith(events_prefix)}
        ),
        what="every stored event on the broker",
    )
    published = [m for m in sub.messages if m.topic.startswith(events_prefix)]
    by_id = {e.event_id: e for e in stored}
    for message in published:
        event = message.json
        assert check(event) == [], (message.topic, event)
        record = by_id[event["event_id"]]
        assert message.topic == f"{prefix}/accounts/{record.account}/devices/{record.dev_eui}/events/{record.type}"
        assert (event["seq"], event["type"], event["account"], event["dev_eui"], event["data"]) == (
            record.seq, record.type, record.account, record.dev_eui, record.data
        )  # fmt: skip
        assert not any(s in message.payload.decode() for s in secrets_seen), event
    for eui in (eui_a, eui_b, eui_c):
        seqs = [m.json["seq"] for m in published if m.json["dev_eui"] == eui.hex()]
        assert seqs == sorted(seqs), eui.hex()

    def data(type_: str, eui: bytes) -> list[dict[str, Any]]:
        return [m.json["data"] for m in published if m.json["type"] == type_ and m.json["dev_eui"] == eui.hex()]

    def account(type_: str, eui: bytes) -> set[str]:
        return {m.json["account"] for m in published if m.json["type"] == type_ and m.json["dev_eui"] == eui.hex()}

    assert data("device.precommissioned", eui_c) == [
        {"join_eui": JOIN_EUI, "mac_version": "1.1", "secure_element": False, "keys_generated": True}
    ]
    assert data("device.keys_exported", eui_c) == [{"keys": ["app_key", "nwk_key"]}]
    assert data("device.keys_exported", eui_a) == []
    assert account("device.precommissioned", eui_a) == {"maker"} and account("device.claimed", eui_a) == {"alice"}
    assert data("device.claimed", eui_a) == [{"join_eui": JOIN_EUI}]
    assert data("device.netid_set", eui_b) == [{"net_id": HOME}, {"net_id": None}]
    assert data("device.astk_set", eui_a) == [{"astk": "as-alice"}]
    assert data("device.released", eui_a) == [{}] and account("device.released", eui_a) == {"alice"}
    join_a = data("join.accepted", eui_a)
    assert join_a == [{"net_id": HOME, "mac_version": "1.0.3", "dev_nonce": sim_a.last_dev_nonce, "join_nonce": 1,
                       "session_key_id": accepted_a["SessionKeyID"].lower()}]  # fmt: skip
    (rejected,) = data("join.rejected", eui_a)
    assert rejected["net_id"] == HOME and rejected["result"] == replayed["Result"]["ResultCode"]
    assert data("rejoin.accepted", eui_b) == [
        {"net_id": HOME, "rejoin_type": 0, "join_nonce": 2, "session_key_id": rejoined["SessionKeyID"].lower()}
    ]
    assert data("appskey.answered", eui_b) == [{"net_id": HOME, "session_key_id": accepted_b["SessionKeyID"].lower()}]
    assert account("join.accepted", eui_b) == {"alice"}
    await d.drained()
