"""End to end: real HTTP LBI requests against the running daemon (SQLite and PostgreSQL, real SoftHSM2).

The device side is computed by ``jsd_sim`` (its own ``cryptography`` code, nothing shared with the
daemon); the NS side unwraps the returned keys with ``cryptography``'s RFC 3394 code. Each case checks the
answer *and* the stored state, so a refused request provably changed nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from jsd_sim import SimDevice

HOME = "000013"
VISITED = "00002a"
JOIN_EUI = "70b3d57ed0000001"


@dataclass
class Net:
    net_id: str
    kek: bytes
    token: str
    label: str


@dataclass
class Dev:
    sim: SimDevice
    astk: bytes | None
    astk_label: str | None

    @property
    def dev_eui(self) -> str:
        return self.sim.dev_eui.hex()


async def _net(server: Any, net_id: str, **kw: Any) -> Net:
    kek, token = secrets.token_bytes(16), secrets.token_urlsafe(16)
    label = await server.add_network_server(net_id, kek, token, **kw)
    return Net(net_id, kek, token, label)


async def _dev(server: Any, version: str, home: str | None = HOME, astk: bool = True) -> Dev:
    dev_eui = secrets.token_bytes(8)
    app_key = secrets.token_bytes(16)
    nwk_key = secrets.token_bytes(16) if version == "1.1" else None
    astk_key = secrets.token_bytes(16) if astk else None
    label = await server.add_device(dev_eui.hex(), JOIN_EUI, version, app_key, nwk_key, home, astk_key)
    return Dev(SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), version, app_key, nwk_key), astk_key, label)


def join_req(dev: Dev, net: Net, phy: bytes, mac_version: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ProtocolVersion": "1.0",
        "SenderID": net.net_id,
        "ReceiverID": JOIN_EUI,
        "TransactionID": secrets.randbelow(2**32),
        "MessageType": "JoinReq",
        "MACVersion": mac_version or dev.sim.mac_version,
        "PHYPayload": phy.hex(),
        "DevEUI": dev.dev_eui,
        "DevAddr": "26011bda",
        "DLSettings": "00",
        "RxDelay": 1,
    }
    body.update(extra)
    return body


async def post(url: str, body: Any, token: str | None, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with aiohttp.ClientSession() as client:
        data = raw if raw is not None else None
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with client.post(url, headers=headers, **kwargs) as response:
            text = await response.text()
            import json

            return response.status, (json.loads(text) if text else {})


async def state(server: Any, dev: Dev) -> tuple[int, int | None, int]:
    found = await server.registry.get_device(dev.sim.dev_eui)
    return found.nonces.join_nonce, found.nonces.last_dev_nonce, found.nonces.version


def unwrap(kek: bytes, envelope: dict[str, str]) -> bytes:
    return aes_key_unwrap(kek, bytes.fromhex(envelope["AESKey"]))


def check_success(answer: dict[str, Any], dev: Dev, net: Net, request: dict[str, Any]) -> Any:
    """The accept opens on the device; every wrapped key equals the device's own derivation."""
    assert answer["Result"] == {"ResultCode": "Success"}, answer
    assert answer["MessageType"] in ("JoinAns", "RejoinAns")
    assert answer["SenderID"] == JOIN_EUI and answer["ReceiverID"] == net.net_id
    assert answer["TransactionID"] == request["TransactionID"]
    session = dev.sim.accept(bytes.fromhex(answer["PHYPayload"]))
    assert session.net_id == bytes.fromhex(net.net_id)
    assert session.dev_addr == bytes.fromhex("26011bda")
    if session.opt_neg:
        assert "NwkSKey" not in answer
        assert unwrap(net.kek, answer["FNwkSIntKey"]) == session.keys.f_nwk_s_int_key
        assert unwrap(net.kek, answer["SNwkSIntKey"]) == session.keys.s_nwk_s_int_key
        assert unwrap(net.kek, answer["NwkSEncKey"]) == session.keys.nwk_s_enc_key
        assert answer["FNwkSIntKey"]["KEKLabel"] == net.label
    else:
        assert "FNwkSIntKey" not in answer
        assert answer["NwkSKey"]["KEKLabel"] == net.label
        assert unwrap(net.kek, answer["NwkSKey"]) == session.keys.nwk_s_key
    assert dev.astk is not None
    assert answer["AppSKey"]["KEKLabel"] == dev.astk_label
    assert unwrap(dev.astk, answer["AppSKey"]) == session.keys.app_s_key
    assert len(bytes.fromhex(answer["SessionKeyID"])) == 16
    return session


@pytest.mark.parametrize("version", ["1.0.2", "1.0.3", "1.0.4", "1.1"])
async def test_join_succeeds_and_keys_agree(jsd_server: Any, version: str) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, version)
    for expected_join_nonce in (1, 2):
        request = join_req(dev, net, dev.sim.join_request())
        status, answer = await post(jsd_server.url, request, net.token)
        assert status == 200
        session = check_success(answer, dev, net, request)
        assert session.join_nonce == expected_join_nonce
        assert session.opt_neg == (version == "1.1")
        join_nonce, last_dev_nonce, _ = await state(jsd_server, dev)
        assert (join_nonce, last_dev_nonce) == (expected_join_nonce, session.dev_nonce)


async def test_1_1_device_on_a_1_0_network_is_served_in_1_0_mode(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    request = join_req(dev, net, dev.sim.join_request(), mac_version="1.0.3", DLSettings="80")
    status, answer = await post(jsd_server.url, request, net.token)
    session = check_success(answer, dev, net, request)
    assert not session.opt_neg
    assert session.dl_settings & 0x80 == 0


async def test_cflist_and_named_path(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.0.3")
    cflist = "184f84e85684b85e84886684586e8400"
    request = join_req(dev, net, dev.sim.join_request(), CFList=cflist, RxDelay=5, DLSettings="0x03")
    status, answer = await post(jsd_server.url + "api/lbi", request, net.token)
    session = check_success(answer, dev, net, request)
    assert session.cflist == bytes.fromhex(cflist)
    assert session.rx_delay == 5 and session.dl_settings == 0x03


@pytest.mark.parametrize("rejoin_type", [0, 1, 2])
async def test_rejoin_types(jsd_server: Any, rejoin_type: int) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    first = join_req(dev, net, dev.sim.join_request())
    check_success((await post(jsd_server.url, first, net.token))[1], dev, net, first)
    for expected_join_nonce in (2, 3):
        request = join_req(dev, net, dev.sim.rejoin_request(rejoin_type), MessageType="RejoinReq")
        status, answer = await post(jsd_server.url, request, net.token)
        assert status == 200
        session = check_success(answer, dev, net, request)
        assert answer["MessageType"] == "RejoinAns"
        assert session.join_req_type == rejoin_type and session.opt_neg
        assert session.join_nonce == expected_join_nonce


async def test_rejoin_type1_replayed_rjcount_is_refused(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    first = join_req(dev, net, dev.sim.join_request())
    check_success((await post(jsd_server.url, first, net.token))[1], dev, net, first)
    frame = dev.sim.rejoin_request(1)
    request = join_req(dev, net, frame, MessageType="RejoinReq")
    check_success((await post(jsd_server.url, request, net.token))[1], dev, net, request)
    before = await state(jsd_server, dev)
    _, answer = await post(jsd_server.url, join_req(dev, net, frame, MessageType="RejoinReq"), net.token)
    assert answer["Result"]["ResultCode"] == "JoinReqFailed"
    assert "RJcount1" in answer["Result"]["Description"]
    assert await state(jsd_server, dev) == before


async def test_home_ns_req_from_a_visited_network(jsd_server: Any) -> None:
    await _net(jsd_server, HOME)
    visited = await _net(jsd_server, VISITED)
    dev = await _dev(jsd_server, "1.0.3")
    body = {
        "ProtocolVersion": "1.0", "SenderID": VISITED, "ReceiverID": JOIN_EUI, "TransactionID": 7,
        "MessageType": "HomeNSReq", "DevEUI": dev.dev_eui,
    }
    _, answer = await post(jsd_server.url, body, visited.token)
    assert answer["Result"]["ResultCode"] == "UnknownDevEUI"  # no roaming agreement: it learns nothing
    await jsd_server.add_roaming_agreement(HOME, VISITED)
    status, answer = await post(jsd_server.url, body, visited.token)
    assert status == 200
    assert answer["Result"]["ResultCode"] == "Success"
    assert answer["HNetID"] == HOME and answer["MessageType"] == "HomeNSAns"
    body["DevEUI"] = "ffffffffffffffff"
    _, answer = await post(jsd_server.url, body, visited.token)
    assert answer["Result"]["ResultCode"] == "UnknownDevEUI"


async def test_app_s_key_req_returns_the_session_app_s_key(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.1")
    request = join_req(dev, net, dev.sim.join_request())
    _, answer = await post(jsd_server.url, request, net.token)
    session = check_success(answer, dev, net, request)
    body = {
        "ProtocolVersion": "1.0", "SenderID": "as.example.org", "ReceiverID": JOIN_EUI, "TransactionID": 9,
        "MessageType": "AppSKeyReq", "DevEUI": dev.dev_eui, "SessionKeyID": answer["SessionKeyID"],
    }
    status, key_answer = await post(jsd_server.url, body, net.token)
    assert key_answer["Result"]["ResultCode"] == "Success", key_answer
    assert key_answer["MessageType"] == "AppSKeyAns" and key_answer["DevEUI"] == dev.dev_eui
    assert key_answer["SessionKeyID"] == answer["SessionKeyID"]
    assert dev.astk is not None
    assert unwrap(dev.astk, key_answer["AppSKey"]) == session.keys.app_s_key
    body["SessionKeyID"] = "00" * 16
    _, key_answer = await post(jsd_server.url, body, net.token)
    assert key_answer["Result"]["ResultCode"] == "UnknownDevEUI"


async def test_concurrent_joins_never_share_a_join_nonce(jsd_server: Any) -> None:
    net = await _net(jsd_server, HOME)
    dev = await _dev(jsd_server, "1.0.3")
    frames = [dev.sim.join_request() for _ in range(12)]
    answers = await asyncio.gather(*(post(jsd_server.url, join_req(dev, net, f), net.token) for f in frames))
    codes = [a["Result"]["ResultCode"] for _, a in answers]
    assert codes.count("Success") == 12, codes
    nonces = []
    for frame, (_, answer) in zip(frames, answers, strict=True):
        dev.sim.join_request(dev_nonce=int.from_bytes(frame[17:19], "little"))
        nonces.append(dev.sim.accept(bytes.fromhex(answer["PHYPayload"])).join_nonce)
    assert sorted(nonces) == list(range(1, 13))
    assert (await state(jsd_server, dev))[0] == 12


async def test_async_answers_are_posted_to_the_ns(jsd_server: Any) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def listener(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/lbi", listener)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        net = await _net(jsd_server, HOME, answer_url=f"http://127.0.0.1:{port}/lbi", async_mode=True)
        dev = await _dev(jsd_server, "1.0.4")
        request = join_req(dev, net, dev.sim.join_request())
        status, body = await post(jsd_server.url, request, net.token)
        assert status == 202 and body == {}
        answer = await asyncio.wait_for(received.get(), 5)
        check_success(answer, dev, net, request)
    finally:
        await runner.cleanup()
