"""A simulated home network server that speaks LoRaWAN Backend Interfaces 1.0 to a Join Server.

It talks the way ChirpStack v4 does (docs/backend-interfaces.md): one JSON message per POST, ``ProtocolVersion``
"1.0", ``SenderID`` = NetID, ``ReceiverID`` = JoinEUI, a random uint32 ``TransactionID``, the bearer token in
``Authorization``, optional fields left out. It then checks, as the device and the network would, that the
answer is usable: the device opens the join-accept, and every session key the network unwraps with its KEK
(and the AppSKey with the ASTK, when the simulator holds it) equals the key the device derived.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web

from jsd_sim.crypto import InvalidUnwrap, constant_time_equal, key_unwrap, mic4
from jsd_sim.device import (
    AcceptError,
    DeviceSession,
    SessionKeys,
    SimDevice,
    is_lorawan_11,
    normalize_mac_version,
)

__all__ = [
    "AppSKeyOutcome",
    "HomeNSOutcome",
    "JoinOutcome",
    "JoinServerDeviation",
    "KeyEnvelope",
    "LbiAnswer",
    "SimError",
    "SimNetworkServer",
    "TransportError",
    "same_result",
    "wire_mac_version",
]

_ANSWER_TYPE = {
    "JoinReq": "JoinAns",
    "RejoinReq": "RejoinAns",
    "HomeNSReq": "HomeNSAns",
    "AppSKeyReq": "AppSKeyAns",
}
_RESULT_ALIASES = {"UnknownReceiver": "UnkownReceiver", "MalformedMessage": "MalformedRequest"}


def same_result(a: str, b: str) -> bool:
    """Compare Result codes, treating the spellings of TS002-1.0.0 Table 24 and of peers as equivalent."""
    return _RESULT_ALIASES.get(a, a) == _RESULT_ALIASES.get(b, b)


def wire_mac_version(version: str) -> str:
    """The ``MACVersion`` string ChirpStack sends: "1.0.0"…"1.0.4", and "1.1.0" for 1.1."""
    v = normalize_mac_version(version)
    return "1.1.0" if v == "1.1" else v


class SimError(Exception):
    """Base of the simulator's errors."""


class TransportError(SimError):
    """No LBI answer at all: connection refused, timeout, a body that is not a JSON object."""


class JoinServerDeviation(SimError):
    """The Join Server answered, but not as LBI 1.0 / LoRaWAN require; ``check`` names the failed check."""

    def __init__(self, check: str, message: str, answer: LbiAnswer | None = None) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.answer = answer


@dataclass(frozen=True)
class KeyEnvelope:
    """An LBI KeyEnvelope: ``AESKey`` wrapped under the KEK named ``KEKLabel``, or plain when the label is ""."""

    kek_label: str
    aes_key: bytes

    @classmethod
    def from_json(cls, value: Any, name: str) -> KeyEnvelope:
        """Parse an envelope strictly; a malformed one is a deviation, not a crash."""
        if not isinstance(value, dict) or not isinstance(value.get("AESKey"), str):
            raise JoinServerDeviation("key-envelope", f"{name} is not a KeyEnvelope object with AESKey")
        label = value.get("KEKLabel", "")
        if not isinstance(label, str):
            raise JoinServerDeviation("key-envelope", f"{name}.KEKLabel is not a string")
        return cls(label, _hex(value["AESKey"], f"{name}.AESKey"))

    def open(self, keks: Mapping[str, bytes], name: str) -> bytes | None:
        """The clear key, or None when the label names a KEK this simulator does not hold."""
        if self.kek_label == "":
            if len(self.aes_key) != 16:
                raise JoinServerDeviation("key-envelope", f"{name} has no KEKLabel but is not a 16-byte key")
            return self.aes_key
        kek = keks.get(self.kek_label)
        if kek is None:
            return None
        try:
            key = key_unwrap(kek, self.aes_key)
        except (InvalidUnwrap, ValueError) as exc:
            raise JoinServerDeviation(
                "key-envelope", f"{name} does not unwrap under KEK {self.kek_label!r} ({type(exc).__name__})"
            ) from None
        if len(key) != 16:
            raise JoinServerDeviation("key-envelope", f"{name} unwraps to {len(key)} bytes, not 16")
        return key


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise JoinServerDeviation("encoding", f"{name} is not a hex string")
    text = value[2:] if value[:2] in ("0x", "0X") else value
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise JoinServerDeviation("encoding", f"{name} is not hex: {value!r}") from None


@dataclass(frozen=True)
class LbiAnswer:
    """One LBI answer as received, with the time from sending the request to having the answer."""

    message_type: str
    result_code: str
    description: str
    body: Mapping[str, Any]
    latency_s: float
    http_status: int
    asynchronous: bool = False

    @property
    def ok(self) -> bool:
        """Result ``Success``."""
        return self.result_code == "Success"


class _Answered:
    """What every round trip's outcome tells of its answer (a mixin: ``answer`` is the dataclass's field)."""

    answer: LbiAnswer

    @property
    def result_code(self) -> str:
        """The answer's ResultCode."""
        return self.answer.result_code

    @property
    def latency_s(self) -> float:
        """Seconds from sending the request to having the answer."""
        return self.answer.latency_s


@dataclass(frozen=True)
class JoinOutcome(_Answered):
    """A JoinReq/RejoinReq round trip: the answer and, on success, what device and network agreed on."""

    request: Mapping[str, Any]
    answer: LbiAnswer
    device_session: DeviceSession | None = None
    network_keys: SessionKeys | None = field(default=None, repr=False)
    app_s_key_envelope: KeyEnvelope | None = field(default=None, repr=False)
    app_s_key_checked: bool = False
    session_key_id: str | None = None
    lifetime: int | None = None

    @property
    def ok(self) -> bool:
        """Result ``Success`` (and, unless verification was turned off, every check passed)."""
        return self.answer.ok


@dataclass(frozen=True)
class HomeNSOutcome(_Answered):
    """A HomeNSReq round trip."""

    answer: LbiAnswer
    h_net_id: bytes | None


@dataclass(frozen=True)
class AppSKeyOutcome(_Answered):
    """An AppSKeyReq round trip; ``app_s_key`` is None unless the simulator holds the ASTK."""

    answer: LbiAnswer
    envelope: KeyEnvelope | None = field(default=None, repr=False)
    app_s_key: bytes | None = field(default=None, repr=False)


def dev_addr_for(net_id: bytes) -> bytes:
    """A random DevAddr inside the NetID's prefix for NetID types 0 and 1 (the common ones), else random."""
    nid = int.from_bytes(net_id, "big")
    kind = nid >> 21
    rnd = int.from_bytes(secrets.token_bytes(4), "big")
    if kind == 0:
        value = ((nid & 0x3F) << 25) | (rnd & 0x1FFFFFF)
    elif kind == 1:
        value = (0b10 << 30) | ((nid & 0x3F) << 24) | (rnd & 0xFFFFFF)
    else:
        value = rnd
    return value.to_bytes(4, "big")


class SimNetworkServer:
    """A home (or visited) network server with its NetID, bearer token, KEKs and the ASTKs its AS holds.

    Synchronous mode by default. With ``answer_port`` set (0 picks a free port), it also listens for
    asynchronous answers on ``answer_url`` and waits up to ``async_timeout`` for one when the Join Server
    answers the POST with an empty body.
    """

    def __init__(
        self,
        js_url: str,
        net_id: bytes | str,
        *,
        token: str | None = None,
        kek_label: str | None = None,
        kek: bytes | None = None,
        astks: Mapping[str, bytes] | None = None,
        answer_port: int | None = None,
        answer_host: str = "127.0.0.1",
        async_timeout: float = 5.0,
        http_timeout: float = 5.0,
        connection_limit: int = 100,
        dl_settings: int = 0x00,
        rx_delay: int = 1,
        cflist: bytes | None = None,
        protocol_version: str = "1.0",
    ) -> None:
        self.js_url = js_url
        self.net_id = bytes.fromhex(net_id) if isinstance(net_id, str) else net_id
        if len(self.net_id) != 3:
            raise ValueError("a NetID is 3 bytes")
        self.token = token
        self.keks: dict[str, bytes] = {}
        if kek_label is not None and kek is not None:
            self.keks[kek_label] = kek
        self.astks: dict[str, bytes] = dict(astks or {})
        self.dl_settings = dl_settings
        self.rx_delay = rx_delay
        self.cflist = cflist
        self.protocol_version = protocol_version
        self.async_timeout = async_timeout
        self.network_sessions: dict[bytes, SessionKeys] = {}
        self.unexpected_answers: list[Mapping[str, Any]] = []
        self._http_timeout = http_timeout
        self._connection_limit = connection_limit
        self._answer_host = answer_host
        self._answer_port = answer_port
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.answer_url: str | None = None

    def __repr__(self) -> str:
        return f"SimNetworkServer(net_id={self.net_id.hex()}, js_url={self.js_url!r})"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP client and, in async mode, the answer listener."""
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._http_timeout),
                connector=aiohttp.TCPConnector(limit=self._connection_limit),
            )
        if self._answer_port is not None and self._runner is None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._on_async_answer)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self._answer_host, self._answer_port)
            await site.start()
            port = self._runner.addresses[0][1]
            self.answer_url = f"http://{self._answer_host}:{port}/"

    async def close(self) -> None:
        """Close the client and the listener; pending async waits are cancelled."""
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_async_answer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            tid = int(body["TransactionID"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"Result": {"ResultCode": "MalformedRequest"}}, status=400)
        fut = self._pending.get(tid)
        if fut is None or fut.done():
            self.unexpected_answers.append(body)
        else:
            fut.set_result(body)
        return web.Response(status=200)

    # -- the LBI exchange ---------------------------------------------------------------------------------

    async def request(
        self, message_type: str, receiver_id: str, fields: Mapping[str, Any], *, sender_id: str | None = None
    ) -> tuple[dict[str, Any], LbiAnswer]:
        """Send one LBI request; return what was sent and the answer, after checking the answer header."""
        if self._client is None:
            await self.start()
        assert self._client is not None
        sender = sender_id if sender_id is not None else self.net_id.hex()
        tid = secrets.randbits(32)
        while tid in self._pending:
            tid = secrets.randbits(32)
        msg: dict[str, Any] = {
            "ProtocolVersion": self.protocol_version,
            "SenderID": sender,
            "ReceiverID": receiver_id,
            "TransactionID": tid,
            "MessageType": message_type,
            **fields,
        }
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        fut: asyncio.Future[dict[str, Any]] | None = None
        if self._runner is not None:
            fut = asyncio.get_running_loop().create_future()
            self._pending[tid] = fut
        start = time.perf_counter()
        try:
            try:
                async with self._client.post(self.js_url, data=json.dumps(msg), headers=headers) as resp:
                    status = resp.status
                    raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise TransportError(f"{message_type} to {self.js_url}: {type(exc).__name__}: {exc}") from None
            asynchronous = False
            if raw.strip():
                body = self._decode(raw, message_type)
            elif fut is not None and 200 <= status < 300:
                asynchronous = True
                try:
                    body = await asyncio.wait_for(fut, self.async_timeout)
                except TimeoutError:
                    raise TransportError(
                        f"{message_type}: no asynchronous answer within {self.async_timeout:g} s"
                    ) from None
            else:
                raise TransportError(f"{message_type}: HTTP {status} with an empty body")
        finally:
            self._pending.pop(tid, None)
        latency = time.perf_counter() - start
        answer = self._answer(body, status, latency, asynchronous)
        self._check_header(msg, answer)
        return msg, answer

    @staticmethod
    def _decode(raw: bytes, message_type: str) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise TransportError(f"{message_type}: answer is not JSON: {raw[:80]!r}") from None
        if not isinstance(body, dict):
            raise TransportError(f"{message_type}: answer is not a JSON object")
        return body

    @staticmethod
    def _answer(body: dict[str, Any], status: int, latency: float, asynchronous: bool) -> LbiAnswer:
        result = body.get("Result")
        code = result.get("ResultCode") if isinstance(result, dict) else None
        desc = result.get("Description", "") if isinstance(result, dict) else ""
        answer = LbiAnswer(
            message_type=str(body.get("MessageType", "")),
            result_code=code if isinstance(code, str) else "",
            description=desc if isinstance(desc, str) else "",
            body=body,
            latency_s=latency,
            http_status=status,
            asynchronous=asynchronous,
        )
        if not isinstance(code, str):
            raise JoinServerDeviation("result", "answer has no Result.ResultCode", answer)
        return answer

    @staticmethod
    def _check_header(msg: Mapping[str, Any], answer: LbiAnswer) -> None:
        """What ChirpStack relies on: 2xx, the answer type, the echoed TransactionID, swapped IDs."""
        if not 200 <= answer.http_status < 300:
            raise JoinServerDeviation(
                "http-status",
                f"HTTP {answer.http_status} (ChirpStack treats any non-2xx as a transport error); "
                f"Result {answer.result_code}",
                answer,
            )
        b = answer.body
        expected_type = _ANSWER_TYPE[msg["MessageType"]]
        problems = []
        if b.get("MessageType") != expected_type:
            problems.append(f"MessageType {b.get('MessageType')!r}, expected {expected_type!r}")
        if b.get("TransactionID") != msg["TransactionID"]:
            problems.append(f"TransactionID {b.get('TransactionID')!r}, expected {msg['TransactionID']}")
        if b.get("ProtocolVersion") != msg["ProtocolVersion"]:
            problems.append(f"ProtocolVersion {b.get('ProtocolVersion')!r}, expected {msg['ProtocolVersion']!r}")
        if str(b.get("SenderID", "")).lower() != str(msg["ReceiverID"]).lower():
            problems.append(f"SenderID {b.get('SenderID')!r}, expected {msg['ReceiverID']!r}")
        if str(b.get("ReceiverID", "")).lower() != str(msg["SenderID"]).lower():
            problems.append(f"ReceiverID {b.get('ReceiverID')!r}, expected {msg['SenderID']!r}")
        if problems:
            raise JoinServerDeviation("header", "; ".join(problems), answer)

    # -- join and rejoin ----------------------------------------------------------------------------------

    async def join(
        self,
        device: SimDevice,
        *,
        mac_version: str | None = None,
        dev_nonce: int | None = None,
        dev_addr: bytes | None = None,
        sender_id: str | None = None,
        root_key: bytes | None = None,
        verify: bool = True,
    ) -> JoinOutcome:
        """JoinReq for one JoinRequest of ``device``; on Success, check device and network agree.

        ``mac_version`` is the version the NS believes (a 1.1 device on a 1.0 NS: "1.0.3");
        ``dev_nonce`` sends that value (a replay); ``sender_id`` spoofs the SenderID; ``root_key`` MICs the
        request with another key; ``verify=False`` only reads the Result (load runs against a dummy server).
        """
        ns_mac = normalize_mac_version(mac_version or device.mac_version)
        phy = device.join_request(dev_nonce, root_key=root_key)
        return await self._join_like("JoinReq", device, ns_mac, phy, dev_addr or dev_addr_for(self.net_id),
                                     sender_id, verify)

    async def rejoin(
        self, device: SimDevice, rejoin_type: int, *, sender_id: str | None = None, verify: bool = True
    ) -> JoinOutcome:
        """RejoinReq for a Rejoin-request type 0/1/2; the NS first checks a type 0/2 MIC, as a real NS does."""
        phy = device.rejoin_request(rejoin_type)
        if rejoin_type in (0, 2):
            keys = self.network_sessions.get(device.dev_eui)
            if keys is None:
                raise SimError(f"{device.dev_eui.hex()}: the NS holds no session to check a type {rejoin_type} MIC")
            if not constant_time_equal(mic4(keys.s_nwk_s_int_key, phy[:-4]), phy[-4:]):
                raise SimError("rejoin-request MIC does not verify with the NS's SNwkSIntKey")
        session = device.session
        dev_addr = session.dev_addr if rejoin_type == 2 and session is not None else dev_addr_for(self.net_id)
        return await self._join_like("RejoinReq", device, "1.1", phy, dev_addr, sender_id, verify)

    async def _join_like(
        self, message_type: str, device: SimDevice, ns_mac: str, phy: bytes, dev_addr: bytes,
        sender_id: str | None, verify: bool,
    ) -> JoinOutcome:
        dl = (self.dl_settings & 0x7F) | (0x80 if is_lorawan_11(ns_mac) else 0)
        fields: dict[str, Any] = {
            "MACVersion": wire_mac_version(ns_mac),
            "PHYPayload": phy.hex(),
            "DevEUI": device.dev_eui.hex(),
            "DevAddr": dev_addr.hex(),
            "DLSettings": f"{dl:02x}",
            "RxDelay": self.rx_delay,
        }
        if self.cflist is not None:
            fields["CFList"] = self.cflist.hex()
        msg, answer = await self.request(message_type, device.join_eui.hex(), fields, sender_id=sender_id)
        if not answer.ok or not verify:
            return JoinOutcome(request=msg, answer=answer)
        return self._verify_join(device, ns_mac, msg, answer, dev_addr, dl)

    def _verify_join(
        self, device: SimDevice, ns_mac: str, msg: Mapping[str, Any], answer: LbiAnswer, dev_addr: bytes, dl: int
    ) -> JoinOutcome:
        b = answer.body

        def deviation(check: str, text: str) -> JoinServerDeviation:
            return JoinServerDeviation(check, text, answer)

        if "PHYPayload" not in b:
            raise deviation("missing-field", "Success without PHYPayload")
        try:
            session = device.accept(_hex(b["PHYPayload"], "PHYPayload"))
        except AcceptError as exc:
            raise deviation("accept", f"the device rejects the join-accept: {exc}") from None
        expected_dl = dl if is_lorawan_11(ns_mac) else dl & 0x7F
        mismatches = []
        if session.dev_addr != dev_addr:
            mismatches.append(f"DevAddr {session.dev_addr.hex()} != requested {dev_addr.hex()}")
        if session.net_id != self.net_id:
            mismatches.append(f"NetID {session.net_id.hex()} != home NetID {self.net_id.hex()}")
        if session.dl_settings != expected_dl:
            mismatches.append(f"DLSettings {session.dl_settings:02x} != {expected_dl:02x}")
        if session.rx_delay != self.rx_delay:
            mismatches.append(f"RxDelay {session.rx_delay} != {self.rx_delay}")
        if session.cflist != self.cflist:
            mismatches.append("CFList differs from the request")
        if mismatches:
            raise deviation("accept-fields", "; ".join(mismatches))

        dev_keys = session.keys
        if is_lorawan_11(ns_mac):
            names = {"FNwkSIntKey": dev_keys.f_nwk_s_int_key, "SNwkSIntKey": dev_keys.s_nwk_s_int_key,
                     "NwkSEncKey": dev_keys.nwk_s_enc_key}
        else:
            names = {"NwkSKey": dev_keys.nwk_s_key}
        net: dict[str, bytes] = {}
        for name, dev_key in names.items():
            if name not in b:
                raise deviation("missing-field", f"Success without {name} (ChirpStack cannot store the session)")
            env = KeyEnvelope.from_json(b[name], name)
            key = env.open(self.keks, name)
            if key is None:
                raise deviation("kek-label", f"{name} is wrapped under KEK {env.kek_label!r}, unknown to this NS")
            if not constant_time_equal(key, dev_key):
                raise deviation("session-keys", f"{name} differs between device and network")
            net[name] = key
        if is_lorawan_11(ns_mac):
            net_keys = SessionKeys(net["FNwkSIntKey"], net["SNwkSIntKey"], net["NwkSEncKey"], dev_keys.app_s_key)
        else:
            k = net["NwkSKey"]
            net_keys = SessionKeys(k, k, k, dev_keys.app_s_key)

        app_env = None
        app_checked = False
        if "AppSKey" in b:
            app_env = KeyEnvelope.from_json(b["AppSKey"], "AppSKey")
            app_key = app_env.open(self.astks, "AppSKey")
            if app_key is not None:
                if not constant_time_equal(app_key, dev_keys.app_s_key):
                    raise deviation("session-keys", "AppSKey differs between device and application server")
                app_checked = True
        skid = b.get("SessionKeyID")
        if skid is not None:
            _hex(skid, "SessionKeyID")
        lifetime = b.get("Lifetime")
        if lifetime is not None and (not isinstance(lifetime, int) or lifetime < 0):
            raise deviation("encoding", f"Lifetime {lifetime!r} is not a non-negative integer")
        self.network_sessions[device.dev_eui] = net_keys
        return JoinOutcome(
            request=msg, answer=answer, device_session=session, network_keys=net_keys,
            app_s_key_envelope=app_env, app_s_key_checked=app_checked,
            session_key_id=skid.lower() if isinstance(skid, str) else None, lifetime=lifetime,
        )

    # -- HomeNSReq and AppSKeyReq -------------------------------------------------------------------------

    async def home_ns(self, dev_eui: bytes, join_eui: bytes, *, sender_id: str | None = None) -> HomeNSOutcome:
        """HomeNSReq, as a visited network asks before passive roaming."""
        _, answer = await self.request("HomeNSReq", join_eui.hex(), {"DevEUI": dev_eui.hex()}, sender_id=sender_id)
        h_net_id = None
        if answer.ok:
            if "HNetID" not in answer.body:
                raise JoinServerDeviation("missing-field", "Success without HNetID", answer)
            h_net_id = _hex(answer.body["HNetID"], "HNetID")
            if len(h_net_id) != 3:
                raise JoinServerDeviation("encoding", "HNetID is not 3 bytes", answer)
        return HomeNSOutcome(answer, h_net_id)

    async def app_s_key(
        self, dev_eui: bytes, join_eui: bytes, session_key_id: str, *, sender_id: str | None = None
    ) -> AppSKeyOutcome:
        """AppSKeyReq by SessionKeyID, as an application server fetches the key later."""
        _, answer = await self.request(
            "AppSKeyReq", join_eui.hex(), {"DevEUI": dev_eui.hex(), "SessionKeyID": session_key_id},
            sender_id=sender_id,
        )
        if not answer.ok:
            return AppSKeyOutcome(answer)
        b = answer.body
        if "AppSKey" not in b:
            raise JoinServerDeviation("missing-field", "Success without AppSKey", answer)
        if str(b.get("DevEUI", "")).lower() != dev_eui.hex():
            raise JoinServerDeviation("answer-fields", f"DevEUI {b.get('DevEUI')!r} != {dev_eui.hex()}", answer)
        if str(b.get("SessionKeyID", "")).lower() != session_key_id.lower():
            raise JoinServerDeviation("answer-fields", "SessionKeyID not echoed", answer)
        env = KeyEnvelope.from_json(b["AppSKey"], "AppSKey")
        return AppSKeyOutcome(answer, env, env.open(self.astks, "AppSKey"))
