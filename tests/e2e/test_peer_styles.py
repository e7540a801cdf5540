"""The strict decoding keeps both peers' spellings working: a full join as each one writes its JoinReq.

The Things Stack (lorawan-stack ``pkg/interop``): upper-case hex, ``SenderNSID``, ProtocolVersion ``1.1``,
MACVersion ``1.1`` and ``1.0`` (for 1.0.0), an empty ``CFList`` member, a trailing newline after the JSON. ChirpStack v4 (``backend``
crate): lower-case hex, ProtocolVersion ``1.0``, MACVersion ``1.1.0`` or ``1.0.3``, no ``CFList``, compact JSON.
Both send ``Content-Type: application/json`` and nothing else.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


def the_things_stack(device: SimDevice, frame: bytes) -> bytes:
    body = {
        "ProtocolVersion": "1.1", "TransactionID": 0, "MessageType": "JoinReq", "SenderID": HOME.upper(),
        "ReceiverID": JOIN_EUI.upper(), "SenderNSID": HOME.upper(),
        "MACVersion": {"1.0.0": "1.0"}.get(device.mac_version, device.mac_version),
        "PHYPayload": frame.hex().upper(), "DevEUI": device.dev_eui.hex().upper(), "DevAddr": "26011BDA",
        "DLSettings": "80" if device.mac_version == "1.1" else "00", "RxDelay": 5, "CFList": "",
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def chirpstack(device: SimDevice, frame: bytes) -> bytes:
    body = {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 3407751389,
        "MessageType": "JoinReq", "MACVersion": "1.1.0" if device.mac_version == "1.1" else device.mac_version,
        "PHYPayload": frame.hex(), "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda",
        "DLSettings": "80" if device.mac_version == "1.1" else "00", "RxDelay": 1,
    }
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize("version", ["1.0.0", "1.0.3", "1.1"])
@pytest.mark.parametrize("peer", [the_things_stack, chirpstack], ids=["the-things-stack", "chirpstack"])
async def test_each_peer_style_joins(jsd_server: Any, peer: Any, version: str) -> None:
    kek, token = secrets.token_bytes(16), secrets.token_urlsafe(16)
    await jsd_server.add_network_server(HOME, kek, token)
    dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
    nwk_key = secrets.token_bytes(16) if version == "1.1" else None
    await jsd_server.add_device(dev_eui.hex(), JOIN_EUI, version, app_key, nwk_key, HOME, secrets.token_bytes(16))
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, app_key, nwk_key)
    body = peer(device, device.join_request())
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as client:
        async with client.post(jsd_server.url, data=body, headers=headers) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
    request = json.loads(body)
    assert answer["Result"] == {"ResultCode": "Success"}, answer
    assert answer["TransactionID"] == request["TransactionID"]
    assert answer["ProtocolVersion"] == request["ProtocolVersion"]
    session = device.accept(bytes.fromhex(answer["PHYPayload"]))
    assert session.opt_neg == (version == "1.1")
    wrapped = answer["FNwkSIntKey"] if session.opt_neg else answer["NwkSKey"]
    expected = session.keys.f_nwk_s_int_key if session.opt_neg else session.keys.nwk_s_key
    assert aes_key_unwrap(kek, bytes.fromhex(wrapped["AESKey"])) == expected
