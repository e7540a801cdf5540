"""Fixtures for the simulator's own tests, including a small in-process fake Join Server.

The fake follows LoRaWAN Backend Interfaces 1.0 (docs/backend-interfaces.md) from the Join Server's side (its own frame parsing, accept building and key
wrapping; only the AES/CMAC primitives come from jsd_sim.crypto, which the RFC vectors pin). It lets the
simulator's network side, scenarios, async mode and load mode be tested without the daemon. It is not the
daemon and proves nothing about it: tests/sim/test_scenarios_daemon.py does that.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jsd_sim.crypto import aes_cmac, aes_ecb_decrypt, aes_ecb_encrypt, key_wrap
from jsd_sim.pytest_plugin import sim_conformance, sim_device_factory, sim_ns_factory

__all__ = ["sim_conformance", "sim_device_factory", "sim_ns_factory"]


def _rev(b: bytes) -> bytes:
    return b[::-1]


def _pad(b: bytes) -> bytes:
    return b + bytes(16 - len(b))


@dataclass
class _Ns:
    net_id: str
    kek: bytes
    label: str
    answer_url: str | None


@dataclass
class _Dev:
    join_eui: str
    version: str
    app_key: bytes
    nwk_key: bytes | None
    home: str | None
    astk: bytes | None
    astk_label: str | None
    join_nonce: int = 0
    last_dev_nonce: int | None = None
    used: set[int] = field(default_factory=set)
    sessions: dict[str, bytes] = field(default_factory=dict)


class FakeJoinServer:
    """Speaks LBI 1.0 as docs/backend-interfaces.md describes it; same provisioning interface as ``jsd_server``."""

    def __init__(self) -> None:
        self.url = ""
        self.by_token: dict[str, _Ns] = {}
        self.devices: dict[str, _Dev] = {}
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/lbi"
        self._client = aiohttp.ClientSession()

    async def close(self) -> None:
        for t in list(self._tasks):
            await t
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def add_network_server(
        self, net_id: str, kek: bytes, token: str, answer_url: str | None = None, async_mode: bool = False
    ) -> str:
        label = f"ns-{net_id}"
        self.by_token[token] = _Ns(net_id, kek, label, answer_url if async_mode else None)
        return label

    async def add_device(
        self, dev_eui: str, join_eui: str, mac_version: str, app_key: bytes, nwk_key: bytes | None,
        home_net_id: str | None, astk: bytes | None,
    ) -> str | None:
        label = f"astk-{dev_eui}" if astk else None
        self.devices[dev_eui] = _Dev(join_eui, mac_version, app_key, nwk_key, home_net_id, astk, label)
        return label

    # -- LBI ----------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            msg = json.loads(await request.read())
            mtype = msg["MessageType"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"Result": {"ResultCode": "MalformedRequest"}}, status=400)
        auth = request.headers.get("Authorization", "")
        ns = self.by_token.get(auth.removeprefix("Bearer "))
        if ns is None or msg.get("SenderID") != ns.net_id:
            fields: dict[str, Any] = {"Result": {"ResultCode": "UnknownSender"}}
        else:
            handler = {"JoinReq": self._join, "RejoinReq": self._rejoin, "HomeNSReq": self._home_ns,
                       "AppSKeyReq": self._app_s_key}[mtype]
            fields = handler(msg, ns)
        answer = {
            "ProtocolVersion": msg["ProtocolVersion"], "SenderID": msg["ReceiverID"],
            "ReceiverID": msg["SenderID"], "TransactionID": msg["TransactionID"],
            "MessageType": mtype.replace("Req", "Ans"), **fields,
        }
        if ns is not None and ns.answer_url:
            task = asyncio.get_running_loop().create_task(self._post_async(ns.answer_url, answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return web.Response(status=202)
        return web.json_response(answer)

    async def _post_async(self, url: str, answer: dict[str, Any]) -> None:
        assert self._client is not None
        async with self._client.post(url, json=answer) as resp:
            await resp.read()

    @staticmethod
    def _fail(code: str, desc: str = "") -> dict[str, Any]:
        return {"Result": {"ResultCode": code, **({"Description": desc} if desc else {})}}

    def _env(self, kek: bytes | None, label: str | None, key: bytes) -> dict[str, str]:
        if kek is None or label is None:
            return {"KEKLabel": "", "AESKey": key.hex()}
        return {"KEKLabel": label, "AESKey": key_wrap(kek, key).hex()}

    def _join(self, msg: dict[str, Any], ns: _Ns) -> dict[str, Any]:
        phy = bytes.fromhex(msg["PHYPayload"])
        if len(phy) != 23 or phy[0] != 0x00:
            return self._fail("MalformedRequest")
        join_eui, dev_eui, nonce = _rev(phy[1:9]).hex(), _rev(phy[9:17]).hex(), int.from_bytes(phy[17:19], "little")
        dev = self.devices.get(dev_eui)
        if dev is None or dev.join_eui != join_eui:
            return self._fail("UnknownDevEUI")
        if dev.home != ns.net_id:
            return self._fail("ActivationDisallowed")
        root = dev.nwk_key if dev.version == "1.1" else dev.app_key
        assert root is not None
        if aes_cmac(root, phy[:19])[:4] != phy[19:]:
            return self._fail("MICFailed")
        if dev.version in ("1.0.4", "1.1"):
            if dev.last_dev_nonce is not None and nonce <= dev.last_dev_nonce:
                return self._fail("JoinReqFailed", f"DevNonce {nonce} not increasing")
        elif nonce in dev.used:
            return self._fail("JoinReqFailed", f"DevNonce {nonce} already used")
        dev.last_dev_nonce = nonce
        dev.used.add(nonce)
        opt_neg = dev.version == "1.1" and msg["MACVersion"] in ("1.1", "1.1.0")
        return self._accept(msg, ns, dev, dev_eui, 0xFF, nonce, opt_neg, root)

    def _rejoin(self, msg: dict[str, Any], ns: _Ns) -> dict[str, Any]:
        phy = bytes.fromhex(msg["PHYPayload"])
        rtype = phy[1]
        dev_eui = msg["DevEUI"].lower()
        dev = self.devices.get(dev_eui)
        if dev is None or dev.version != "1.1" or dev.nwk_key is None:
            return self._fail("UnknownDevEUI")
        if rtype == 1:
            js_int = aes_ecb_encrypt(dev.nwk_key, _pad(b"\x06" + _rev(bytes.fromhex(dev_eui))))
            if aes_cmac(js_int, phy[:-4])[:4] != phy[-4:]:
                return self._fail("MICFailed")
            count = int.from_bytes(phy[18:20], "little")
        else:
            count = int.from_bytes(phy[13:15], "little")
        if dev.home != ns.net_id:
            return self._fail("ActivationDisallowed")
        js_enc = aes_ecb_encrypt(dev.nwk_key, _pad(b"\x05" + _rev(bytes.fromhex(dev_eui))))
        return self._accept(msg, ns, dev, dev_eui, rtype, count, True, js_enc)

    def _accept(
        self, msg: dict[str, Any], ns: _Ns, dev: _Dev, dev_eui: str, req_type: int, nonce: int, opt_neg: bool,
        enc_key: bytes,
    ) -> dict[str, Any]:
        dev.join_nonce += 1
        jn = dev.join_nonce.to_bytes(3, "little")
        dl = int(msg["DLSettings"], 16)
        dl = dl | 0x80 if opt_neg else dl & 0x7F
        net_id = bytes.fromhex(ns.net_id)
        body = (jn + _rev(net_id) + _rev(bytes.fromhex(msg["DevAddr"])) + bytes([dl, msg["RxDelay"]])
                + bytes.fromhex(msg.get("CFList", "")))
        join_eui_wire = _rev(bytes.fromhex(dev.join_eui))
        dn = nonce.to_bytes(2, "little")
        if opt_neg:
            assert dev.nwk_key is not None
            js_int = aes_ecb_encrypt(dev.nwk_key, _pad(b"\x06" + _rev(bytes.fromhex(dev_eui))))
            mic = aes_cmac(js_int, bytes([req_type]) + join_eui_wire + dn + b"\x20" + body)[:4]
            keys = {name: aes_ecb_encrypt(dev.nwk_key, _pad(bytes([t]) + jn + join_eui_wire + dn))
                    for name, t in (("FNwkSIntKey", 1), ("SNwkSIntKey", 3), ("NwkSEncKey", 4))}
            app_s = aes_ecb_encrypt(dev.app_key, _pad(b"\x02" + jn + join_eui_wire + dn))
        else:
            mic = aes_cmac(enc_key, b"\x20" + body)[:4]
            keys = {"NwkSKey": aes_ecb_encrypt(enc_key, _pad(b"\x01" + jn + _rev(net_id) + dn))}
            app_s = aes_ecb_encrypt(enc_key, _pad(b"\x02" + jn + _rev(net_id) + dn))
        skid = secrets.token_hex(16)
        dev.sessions[skid] = app_s
        out: dict[str, Any] = {
            "Result": {"ResultCode": "Success"},
            "PHYPayload": (b"\x20" + aes_ecb_decrypt(enc_key, body + mic)).hex(),
            "Lifetime": 0,
            "AppSKey": self._env(dev.astk, dev.astk_label, app_s),
            "SessionKeyID": skid,
        }
        for name, key in keys.items():
            out[name] = self._env(ns.kek, ns.label, key)
        return out

    def _home_ns(self, msg: dict[str, Any], ns: _Ns) -> dict[str, Any]:
        dev = self.devices.get(msg["DevEUI"].lower())
        if dev is None or dev.home is None:
            return self._fail("UnknownDevEUI")
        return {"Result": {"ResultCode": "Success"}, "HNetID": dev.home}

    def _app_s_key(self, msg: dict[str, Any], ns: _Ns) -> dict[str, Any]:
        dev = self.devices.get(msg["DevEUI"].lower())
        key = dev.sessions.get(msg["SessionKeyID"].lower()) if dev is not None else None
        if dev is None or key is None:
            return self._fail("UnknownDevEUI", "SessionKeyID unknown")
        return {"Result": {"ResultCode": "Success"}, "DevEUI": msg["DevEUI"], "SessionKeyID": msg["SessionKeyID"],
                "AppSKey": self._env(dev.astk, dev.astk_label, key)}


@pytest.fixture
async def fake_js() -> AsyncIterator[FakeJoinServer]:
    """A started fake Join Server on a free loopback port."""
    js = FakeJoinServer()
    await js.start()
    yield js
    await js.close()


class ThreadedFakeJs:
    """The fake Join Server on its own event loop in a thread, for code that runs ``asyncio.run`` (the CLI)."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.js = self.call(self._start())

    async def _start(self) -> FakeJoinServer:
        js = FakeJoinServer()
        await js.start()
        return js

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def close(self) -> None:
        self.call(self.js.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def threaded_fake_js() -> Any:
    """A fake Join Server served from a background thread."""
    server = ThreadedFakeJs()
    yield server
    server.close()
