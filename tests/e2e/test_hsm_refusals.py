"""An HSM failure is refused with a generic description; its detail (labels, groups) goes to the log only.

The failures are real: an NS registered with a KEK label that is not in the token, and a device whose root key
blob is wrapped under another group's storage KEK.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Any

import aiohttp
import pytest

from jsd.registry import NetworkServer
from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


async def post(url: str, body: dict[str, Any], token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as client:
        async with client.post(url, json=body, headers=headers) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer


def join_req(device: SimDevice, transaction_id: int) -> dict[str, Any]:
    return {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": transaction_id,
        "MessageType": "JoinReq", "MACVersion": "1.0.3", "PHYPayload": device.join_request().hex(),
        "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }


def refusal_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jsd.lbi" and "refused:" in r.getMessage()]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_missing_kek_is_not_named_to_the_peer(jsd_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    token = secrets.token_urlsafe(16)
    label = f"ns-gone-{secrets.token_hex(3)}"
    await jsd_server.registry.add_network_server(NetworkServer(
        net_id=bytes.fromhex(HOME), name="NS", kek_label=label, token_hash=hashlib.sha256(token.encode()).hexdigest(),
        cert_fingerprint=None, answer_url=None, async_mode=False,
    ))
    dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
    await jsd_server.add_device(dev_eui.hex(), JOIN_EUI, "1.0.3", app_key, None, HOME, None)
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.3", app_key)
    before = (await jsd_server.registry.get_device(dev_eui)).nonces

    answer = await post(jsd_server.url, join_req(device, 4242), token)

    assert answer["Result"]["ResultCode"] == "Other"
    text = json.dumps(answer)
    assert label not in text and "labelled" not in text and "HSM" not in text and "KeyNotFound" not in text
    assert answer["Result"]["Description"] == "key service could not process this device"
    assert (await jsd_server.registry.get_device(dev_eui)).nonces == before
    (logged,) = refusal_logs(caplog)
    assert label in logged.getMessage() and "KeyNotFound" in logged.getMessage()
    assert getattr(logged, "transaction_id", None) == 4242 and getattr(logged, "dev_eui", None) == dev_eui.hex()


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_root_key_blob_that_does_not_unwrap_is_not_described_to_the_peer(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from jsd.registry import NewDevice

    kek, token = secrets.token_bytes(16), secrets.token_urlsafe(16)
    await jsd_server.add_network_server(HOME, kek, token)
    group = f"other-{secrets.token_hex(3)}"
    await jsd_server.hsm.ensure_storage_kek(group)
    dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
    await jsd_server.registry.add_device(NewDevice(
        dev_eui=dev_eui, join_eui=bytes.fromhex(JOIN_EUI), mac_version="1.0.3", hsm_group="default",
        app_key_blob=await jsd_server.hsm.import_root_key(group, app_key), nwk_key_blob=None,
        home_net_id=bytes.fromhex(HOME), astk_label=None, owner_account=None, name=None,
    ))
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.3", app_key)

    answer = await post(jsd_server.url, join_req(device, 77), token)

    assert answer["Result"]["ResultCode"] == "Other", answer
    text = json.dumps(answer)
    assert "unwrap" not in text and "blob" not in text and "default" not in text and group not in text
    (logged,) = refusal_logs(caplog)
    assert "InvalidKeyBlob" in logged.getMessage() and getattr(logged, "transaction_id", None) == 77
