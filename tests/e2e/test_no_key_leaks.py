"""Known keys go in; afterwards no log line, answer description or database byte holds them in clear."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jsd.logs import JsonFormatter
from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


def _forms(key: bytes) -> list[bytes]:
    """Every way a key could leak: raw bytes, lowercase and uppercase hex."""
    return [key, key.hex().encode(), key.hex().upper().encode()]


async def test_joins_leave_no_key_in_logs_or_database(
    jsd_server: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    kek, astk, token = secrets.token_bytes(16), secrets.token_bytes(16), secrets.token_urlsafe(16)
    await jsd_server.add_network_server(HOME, kek, token)
    app_key, nwk_key = secrets.token_bytes(16), secrets.token_bytes(16)
    dev_eui = secrets.token_bytes(8)
    await jsd_server.add_device(dev_eui.hex(), JOIN_EUI, "1.1", app_key, nwk_key, HOME, astk)
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.1", app_key, nwk_key)
    secrets_seen: list[bytes] = [kek, astk, app_key, nwk_key]
    answers: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as client:
        for phy in (device.join_request(), device.join_request(), b"\x00" * 23):
            body = {
                "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
                "MessageType": "JoinReq", "MACVersion": "1.1", "PHYPayload": phy.hex(), "DevEUI": dev_eui.hex(),
                "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
            }
            async with client.post(jsd_server.url, json=body) as response:
                answers.append(await response.json())
    session = device.accept(bytes.fromhex(answers[1]["PHYPayload"]))
    secrets_seen += [session.keys.f_nwk_s_int_key, session.keys.s_nwk_s_int_key, session.keys.nwk_s_enc_key,
                     session.keys.app_s_key]

    formatter = JsonFormatter()
    log_text = "\n".join(formatter.format(r) + r.getMessage() for r in caplog.records).encode()
    descriptions = json.dumps([a["Result"] for a in answers]).encode()
    assert any(b'"dev_eui"' in formatter.format(r).encode() for r in caplog.records)
    for key in secrets_seen:
        for form in _forms(key):
            assert form not in log_text
            assert form not in descriptions
            assert token.encode() not in log_text
    if jsd_server.database.backend == "sqlite":
        db_path = Path(jsd_server.database.url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        assert dev_eui.hex().encode() in raw  # the rows are there ...
        for key in secrets_seen:
            for form in _forms(key):
                assert form not in raw  # ... but no key in any form
        assert token.encode() not in raw
