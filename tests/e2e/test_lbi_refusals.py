"""Every malformed or hostile LBI input gets the Result code of docs/backend-interfaces.md and changes nothing.

Each case starts from a device that has joined once (so there is state to protect), sends one bad request
and checks the HTTP status, the Result code and that the device's nonce state (including its version,
which every commit bumps) is exactly as before. As nothing may change, the cases share one daemon and device
per database.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from jsd_sim import SimDevice

from ..daemons import migrated_database, running_server

HOME = "000013"
OTHER = "00002a"
JOIN_EUI = "70b3d57ed0000001"


class World:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.kek = secrets.token_bytes(16)
        self.token = secrets.token_urlsafe(16)
        self.other_token = secrets.token_urlsafe(16)
        self.astk = secrets.token_bytes(16)

    async def setup(self, version: str = "1.0.3") -> None:
        await self.server.add_network_server(HOME, self.kek, self.token)
        await self.server.add_network_server(OTHER, secrets.token_bytes(16), self.other_token)
        dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
        nwk_key = secrets.token_bytes(16) if version == "1.1" else None
        await self.server.add_device(dev_eui.hex(), JOIN_EUI, version, app_key, nwk_key, HOME, self.astk)
        self.device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, app_key, nwk_key)
        self.wrong_key_device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, secrets.token_bytes(16),
                                          secrets.token_bytes(16) if nwk_key else None)
        self.first_frame = self.device.join_request()
        status, answer = await self.post(self.request(self.first_frame))
        assert answer["Result"]["ResultCode"] == "Success", answer

    def request(self, phy: bytes, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 42,
            "MessageType": "JoinReq", "MACVersion": self.device.mac_version, "PHYPayload": phy.hex(),
            "DevEUI": self.device.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
        }
        for key, value in changes.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    async def post(self, body: Any = None, token: str | None = "default", raw: bytes | None = None,
                   path: str = "") -> tuple[int, dict[str, Any]]:
        token = self.token if token == "default" else token
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        data = raw if raw is not None else json.dumps(body).encode()
        async with aiohttp.ClientSession() as client:
            async with client.post(self.server.url + path, data=data, headers=headers) as response:
                text = await response.text()
                return response.status, json.loads(text) if text else {}

    async def state(self) -> Any:
        return (await self.server.registry.get_device(self.device.dev_eui)).nonces




def fresh(w: World) -> bytes:
    return w.device.join_request()


CASES: list[tuple[str, Callable[[World], dict[str, Any]], int, str, str]] = [
    # id, kwargs for World.post, status, result code, text in Description
    ("body/not-json", lambda w: {"raw": b"{not json"}, 400, "MalformedRequest", "not JSON"),
    ("body/json-array", lambda w: {"raw": b"[]"}, 400, "MalformedRequest", "JSON object"),
    ("body/too-large", lambda w: {"raw": b'{"a":"' + b"0" * 40000 + b'"}'}, 413, "MalformedRequest", "larger"),
    ("header/no-message-type", lambda w: {"body": w.request(fresh(w), MessageType=None)}, 400, "MalformedRequest", "MessageType"),
    ("header/unknown-message-type", lambda w: {"body": w.request(fresh(w), MessageType="PRStartReq")}, 400, "MalformedRequest", "PRStartReq"),
    ("header/protocol-version", lambda w: {"body": w.request(fresh(w), ProtocolVersion="2.0")}, 200, "InvalidProtocolVersion", "2.0"),
    ("auth/no-credential", lambda w: {"body": w.request(fresh(w)), "token": None}, 200, "UnknownSender", "no credential"),
    ("auth/unknown-token", lambda w: {"body": w.request(fresh(w)), "token": "nope"}, 200, "UnknownSender", "unknown credential"),
    ("auth/sender-id-not-credential", lambda w: {"body": w.request(fresh(w), SenderID=OTHER)}, 200, "UnknownSender", "SenderID"),
    ("auth/not-home-network", lambda w: {"body": w.request(fresh(w), SenderID=OTHER), "token": w.other_token}, 200, "ActivationDisallowed", "not the home network"),
    ("field/phy-short", lambda w: {"body": w.request(fresh(w)[:-1])}, 200, "MalformedRequest", "23 bytes"),
    ("field/phy-not-join-request", lambda w: {"body": w.request(b"\x40" + fresh(w)[1:])}, 200, "MalformedRequest", "PHYPayload"),
    ("field/dev-eui-length", lambda w: {"body": w.request(fresh(w), DevEUI="0102")}, 200, "MalformedRequest", "DevEUI must be 8 bytes"),
    ("field/dev-eui-mismatch", lambda w: {"body": w.request(fresh(w), DevEUI="0102030405060708")}, 200, "MalformedRequest", "does not match"),
    ("field/dev-addr-hex", lambda w: {"body": w.request(fresh(w), DevAddr="zz011bda")}, 200, "MalformedRequest", "DevAddr"),
    ("field/mac-version", lambda w: {"body": w.request(fresh(w), MACVersion="1.2")}, 200, "MalformedRequest", "MACVersion"),
    ("field/rx-delay", lambda w: {"body": w.request(fresh(w), RxDelay=16)}, 200, "MalformedRequest", "RxDelay"),
    ("field/missing-dl-settings", lambda w: {"body": w.request(fresh(w), DLSettings=None)}, 200, "MalformedRequest", "DLSettings"),
    ("field/receiver-not-join-eui", lambda w: {"body": w.request(fresh(w), ReceiverID="70b3d57ed0000002")}, 200, "UnkownReceiver", "ReceiverID"),
    ("crypto/bad-mic", lambda w: {"body": w.request(fresh(w)[:-4] + b"\0\0\0\0")}, 200, "MICFailed", "MIC"),
    ("crypto/wrong-key", lambda w: {"body": w.request(w.wrong_key_device.join_request())}, 200, "MICFailed", "MIC"),
    ("nonce/replayed-dev-nonce", lambda w: {"body": w.request(w.first_frame)}, 200, "JoinReqFailed", "DevNonce"),
    ("nonce/replay-with-bad-mic", lambda w: {"body": w.request(w.first_frame[:-4] + b"\1\2\3\4")}, 200, "MICFailed", "MIC"),
    ("device/unknown-dev-eui", lambda w: {"body": w.request(
        SimDevice(bytes(8), bytes.fromhex(JOIN_EUI), "1.0.3", bytes(16)).join_request(), DevEUI="0000000000000000")},
        200, "UnknownDevEUI", "not registered"),
    ("device/other-join-eui", lambda w: {"body": w.request(
        SimDevice(w.device.dev_eui, bytes.fromhex("70b3d57ed0000002"), "1.0.3", bytes(16)).join_request(),
        ReceiverID="70b3d57ed0000002")}, 200, "UnknownDevEUI", "not registered"),
    ("message/app-s-key-unknown-session", lambda w: {"body": {
        "ProtocolVersion": "1.0", "SenderID": "as", "ReceiverID": JOIN_EUI, "TransactionID": 1,
        "MessageType": "AppSKeyReq", "DevEUI": w.device.dev_eui.hex(), "SessionKeyID": "ab" * 16}},
        200, "UnknownDevEUI", "no session"),
    ("message/app-s-key-bad-id", lambda w: {"body": {
        "ProtocolVersion": "1.0", "SenderID": "as", "ReceiverID": JOIN_EUI, "TransactionID": 1,
        "MessageType": "AppSKeyReq", "DevEUI": w.device.dev_eui.hex(), "SessionKeyID": "xyz"}},
        200, "MalformedRequest", "SessionKeyID"),
    ("message/home-ns-missing-dev-eui", lambda w: {"body": {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
        "MessageType": "HomeNSReq"}}, 200, "MalformedRequest", "DevEUI is missing"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def joined(
    request: pytest.FixtureRequest, hsm_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One daemon and one joined device per database for all the refusal cases: each checks it changed nothing."""
    directory = tmp_path_factory.mktemp("refusals")
    async with (
        migrated_database(request.param, directory) as database,
        running_server(hsm_state, database, directory / "state") as server,
    ):
        world = World(server)
        await world.setup()
        yield world


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("case", "make", "status", "code", "text"), CASES, ids=[c[0] for c in CASES])
async def test_refused_and_nothing_changed(
    joined: World, case: str, make: Callable[[World], dict[str, Any]], status: int, code: str, text: str
) -> None:
    world = joined
    before = await world.state()
    got_status, answer = await world.post(**make(world))
    assert got_status == status, answer
    assert answer["Result"]["ResultCode"] == code, answer
    assert text in answer["Result"].get("Description", ""), answer
    assert await world.state() == before
    if got_status == 200 and "MessageType" in answer:
        assert answer["MessageType"].endswith("Ans")


async def test_protocol_1_1_says_malformed_message(jsd_server: Any) -> None:
    world = World(jsd_server)
    await world.setup()
    _, answer = await world.post(world.request(fresh(world)[:-1], ProtocolVersion="1.1"))
    assert answer["Result"]["ResultCode"] == "MalformedMessage"
    assert answer["ProtocolVersion"] == "1.1"


async def test_1_0_4_dev_nonce_must_increase(jsd_server: Any) -> None:
    world = World(jsd_server)
    await world.setup("1.0.4")
    lower = world.device.join_request(dev_nonce=0)
    before = await world.state()
    _, answer = await world.post(world.request(lower))
    assert answer["Result"]["ResultCode"] == "JoinReqFailed"
    assert "not greater" in answer["Result"]["Description"]
    assert await world.state() == before


async def test_join_nonce_exhaustion_is_a_clear_error(jsd_server: Any) -> None:
    import dataclasses

    world = World(jsd_server)
    await world.setup()
    state = await world.state()
    await jsd_server.registry.commit_join(
        world.device.dev_eui, state.version, dataclasses.replace(state, join_nonce=0xFFFFFF), None
    )
    before = await world.state()
    _, answer = await world.post(world.request(fresh(world)))
    assert answer["Result"]["ResultCode"] == "JoinReqFailed"
    assert "JoinNonce exhausted" in answer["Result"]["Description"]
    assert await world.state() == before


async def test_operator_reset_allows_a_lower_dev_nonce(jsd_server: Any) -> None:
    world = World(jsd_server)
    await world.setup("1.0.4")
    await world.post(world.request(world.device.join_request()))
    await jsd_server.registry.reset_dev_nonces(world.device.dev_eui)
    again = world.device.join_request(dev_nonce=0)
    _, answer = await world.post(world.request(again))
    assert answer["Result"]["ResultCode"] == "Success"
    assert (await world.state()).join_nonce == 3
