"""The application side of end-to-end encryption with ChirpStack v4: AppSKeys from envelopes, clear payloads.

ChirpStack never unwraps an AppSKey that carries a KEK label: it keeps the envelope and puts it, with the
SessionKeyID, into ``joinServerContext`` of every ``up`` event (the ``join`` event has only the SessionKeyID when
there is one). This service subscribes to ChirpStack's MQTT integration (JSON), unwraps the AppSKey with the
subscriber's ASTK, or asks the Join Server for it with an LBI ``AppSKeyReq`` when only the SessionKeyID came,
decrypts FRMPayloads, and republishes them in clear:

    topic   {republish_prefix}/applications/{application_id}/devices/{dev_eui}/up
    payload {"dev_eui", "application_id", "dev_addr", "f_cnt", "f_port", "data" (base64), "time",
             "deduplication_id", "session_key_id"}

An uplink that cannot be opened goes to ``…/devices/{dev_eui}/error`` as ``{"f_cnt", "error"}`` (no key
material). Python callers use :class:`AppServer` directly: ``open_uplink(event)`` and ``enqueue(…)``, which
encrypts a downlink with the FCnt from ``GetNextFCntDown`` and queues it with ``is_encrypted=true`` (ChirpStack's
MQTT ``down`` command cannot carry encrypted payloads).

AppSKeyReq: the daemon authenticates every LBI request by a network server's bearer token, so this service is
registered in the daemon as a network-server entry of its own (``jsd ns add … --generate-token``) and sends that
token. The answer is wrapped under the device's ASTK, which only the subscriber holds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from jsd_chirpstack.payload import DOWNLINK, UPLINK, PayloadError, frm_payload_crypt, unwrap_app_s_key
from jsd_nsadapter.settings import MqttSettings, SettingsError, check_keys, load_toml, read_key, read_secret

log = logging.getLogger("jsd_chirpstack.appserver")

_CACHE_LIMIT = 100_000
EVENT_TOPICS = ("application/+/device/+/event/up", "application/+/device/+/event/join")


class SessionUnknown(PayloadError):
    """No AppSKey can be had for this device now (no envelope, no Join Server, unknown ASTK label)."""


@dataclass(frozen=True)
class Session:
    """One activation of a device, as the application side needs it."""

    dev_eui: bytes
    dev_addr: bytes
    app_s_key: bytes = field(repr=False)
    session_key_id: str | None


@dataclass(frozen=True)
class Uplink:
    """A decrypted uplink."""

    application_id: str
    dev_eui: bytes
    dev_addr: bytes
    f_cnt: int
    f_port: int
    data: bytes
    time: str | None
    deduplication_id: str | None
    session_key_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "dev_eui": self.dev_eui.hex(),
            "application_id": self.application_id,
            "dev_addr": self.dev_addr.hex(),
            "f_cnt": self.f_cnt,
            "f_port": self.f_port,
            "data": base64.b64encode(self.data).decode(),
            "time": self.time,
            "deduplication_id": self.deduplication_id,
            "session_key_id": self.session_key_id,
        }


@dataclass(frozen=True)
class Downlink:
    """A queued, encrypted downlink: ChirpStack's queue-item id and the FCnt it was encrypted with."""

    id: str
    dev_eui: bytes
    f_cnt: int
    f_port: int


def _hex_field(value: Any, name: str, size: int) -> bytes:
    try:
        data = bytes.fromhex(str(value))
    except ValueError:
        raise PayloadError(f"{name} is not hex") from None
    if len(data) != size:
        raise PayloadError(f"{name} must be {size} bytes")
    return data


def _b64_field(value: Any, name: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"{name} is not base64") from None


def _int_field(event: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = event.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{name} must be an integer")
    return value


class AppSKeyClient:
    """LBI 1.0 ``AppSKeyReq`` to the Join Server: the AppSKey of a session, wrapped under the device's ASTK."""

    def __init__(self, url: str, token: str, sender_id: str, join_eui: bytes, *, timeout: float = 5.0) -> None:
        self.url = url
        self._token = token
        self.sender_id = sender_id
        self.join_eui = join_eui
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"AppSKeyClient({self.url}, sender {self.sender_id})"

    async def app_s_key(self, dev_eui: bytes, session_key_id: str, join_eui: bytes | None = None) -> tuple[str, bytes]:
        """``(KEKLabel, AESKey)`` of the session; raises ``SessionUnknown`` with the Result if refused."""
        request = {
            "ProtocolVersion": "1.0",
            "SenderID": self.sender_id,
            "ReceiverID": (join_eui or self.join_eui).hex(),
            "TransactionID": secrets.randbits(32),
            "MessageType": "AppSKeyReq",
            "DevEUI": dev_eui.hex(),
            "SessionKeyID": session_key_id,
        }
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as http,
                http.post(self.url, json=request, headers=headers) as response,
            ):
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SessionUnknown(f"AppSKeyReq to {self.url} failed: {type(exc).__name__}") from None
        result = answer.get("Result", {}) if isinstance(answer, dict) else {}
        if result.get("ResultCode") != "Success":
            raise SessionUnknown(f"AppSKeyReq: {result.get('ResultCode')} {result.get('Description', '')}".strip())
        envelope = answer.get("AppSKey") or {}
        label = envelope.get("KEKLabel")
        if not isinstance(label, str) or not label:
            raise SessionUnknown("AppSKeyAns without a wrapped AppSKey")
        return label, _hex_field(envelope.get("AESKey"), "AppSKey.AESKey", 24)


class AppServer:
    """Opens uplinks and seals downlinks for the devices whose ASTKs it holds (label -> key)."""

    def __init__(
        self,
        astks: Mapping[str, bytes],
        *,
        join_server: AppSKeyClient | None = None,
        chirpstack: Any | None = None,
    ) -> None:
        self._astks = dict(astks)
        self.join_server = join_server
        self.chirpstack = chirpstack  # a jsd_chirpstack.chirpstack.ChirpStackClient, for downlinks
        self._sessions: dict[bytes, Session] = {}
        self._fetched: dict[tuple[bytes, str], bytes] = {}
        self._unwrapped: dict[tuple[str, bytes], bytes] = {}  # one RFC 3394 unwrap per session, not per uplink

    def __repr__(self) -> str:
        return f"AppServer(astks={sorted(self._astks)})"

    def _unwrap(self, label: str, wrapped: bytes) -> bytes:
        key = self._unwrapped.get((label, wrapped))
        if key is None:
            astk = self._astks.get(label)
            if astk is None:
                raise SessionUnknown(
                    f"no ASTK labelled {label!r} here: [astks] is keyed by KEK label (`jsd astks list` shows it)"
                )
            key = unwrap_app_s_key(astk, wrapped)
            if len(self._unwrapped) >= _CACHE_LIMIT:
                self._unwrapped.clear()
            self._unwrapped[(label, wrapped)] = key
        return key

    async def _fetch(self, dev_eui: bytes, session_key_id: str) -> bytes:
        cached = self._fetched.get((dev_eui, session_key_id))
        if cached is not None:
            return cached
        if self.join_server is None:
            raise SessionUnknown("only a SessionKeyID came and no Join Server is configured for AppSKeyReq")
        label, wrapped = await self.join_server.app_s_key(dev_eui, session_key_id, await self._join_eui(dev_eui))
        key = self._unwrap(label, wrapped)
        if len(self._fetched) >= _CACHE_LIMIT:
            self._fetched.clear()
        self._fetched[(dev_eui, session_key_id)] = key
        return key

    async def _join_eui(self, dev_eui: bytes) -> bytes | None:
        """The device's JoinEUI from ChirpStack when it is reachable (the ReceiverID of an AppSKeyReq)."""
        if self.chirpstack is None:
            return None
        from chirpstack_api.api import device_pb2

        from jsd_nsadapter.contract import AdapterError

        try:
            response = await self.chirpstack.call(
                self.chirpstack.devices(), "Get", device_pb2.GetDeviceRequest(dev_eui=dev_eui.hex()), not_found=True
            )
        except AdapterError:
            return None
        text = response.device.join_eui if response is not None else ""
        return bytes.fromhex(text) if len(text) == 16 else None

    async def _session_from_context(self, dev_eui: bytes, dev_addr: bytes, context: Any) -> Session:
        if not isinstance(context, Mapping):
            raise SessionUnknown("the event has no joinServerContext (is the device end-to-end encrypted?)")
        skid = context.get("sessionKeyId") or None
        envelope = context.get("appSKey")
        if isinstance(envelope, Mapping) and envelope.get("kekLabel"):
            key = self._unwrap(str(envelope["kekLabel"]), _b64_field(envelope.get("aesKey"), "appSKey.aesKey"))
        elif isinstance(envelope, Mapping) and envelope.get("aesKey"):
            raise SessionUnknown("the AppSKey came without a KEK label: ChirpStack holds it, not end-to-end")
        elif skid:
            key = await self._fetch(dev_eui, str(skid))
        else:
            raise SessionUnknown("joinServerContext has neither an AppSKey envelope nor a SessionKeyID")
        session = Session(dev_eui, dev_addr, key, str(skid) if skid else None)
        self._sessions[dev_eui] = session
        return session

    async def open_uplink(self, event: Mapping[str, Any]) -> Uplink | None:
        """The clear uplink of a ChirpStack ``up`` event; None when it carries no application payload."""
        info = event.get("deviceInfo") or {}
        dev_eui = _hex_field(info.get("devEui"), "deviceInfo.devEui", 8)
        f_port = _int_field(event, "fPort", 0)
        if f_port == 0 or "data" not in event:
            return None  # MAC commands only (FPort 0): ChirpStack's business
        dev_addr = _hex_field(event.get("devAddr"), "devAddr", 4)
        f_cnt = _int_field(event, "fCnt", 0)
        data = _b64_field(event["data"], "data")
        session = await self._session_from_context(dev_eui, dev_addr, event.get("joinServerContext"))
        # FPort 226 (relay) is decrypted by ChirpStack itself even for end-to-end devices.
        clear = data if f_port == 226 else frm_payload_crypt(session.app_s_key, dev_addr, f_cnt, UPLINK, data)
        return Uplink(
            application_id=str(info.get("applicationId", "")),
            dev_eui=dev_eui,
            dev_addr=dev_addr,
            f_cnt=f_cnt,
            f_port=f_port,
            data=clear,
            time=event.get("time"),
            deduplication_id=event.get("deduplicationId"),
            session_key_id=session.session_key_id,
        )

    async def on_join(self, event: Mapping[str, Any]) -> None:
        """A new activation: forget the old session; learn the new one now if the event allows it."""
        info = event.get("deviceInfo") or {}
        dev_eui = _hex_field(info.get("devEui"), "deviceInfo.devEui", 8)
        self._sessions.pop(dev_eui, None)
        context = event.get("joinServerContext")
        if isinstance(context, Mapping) and (context.get("sessionKeyId") or context.get("appSKey")):
            dev_addr = _hex_field(event.get("devAddr"), "devAddr", 4)
            try:
                await self._session_from_context(dev_eui, dev_addr, context)
            except SessionUnknown as exc:
                log.info("join of %s: session not known yet (%s)", dev_eui.hex(), exc)

    async def session(self, dev_eui: bytes) -> Session:
        """The device's current session: the last one seen, else ChirpStack's ``GetActivation``."""
        known = self._sessions.get(dev_eui)
        if known is not None:
            return known
        if self.chirpstack is None:
            raise SessionUnknown(f"no session seen for {dev_eui.hex()} and no ChirpStack API configured")
        from chirpstack_api.api import device_pb2

        response = await self.chirpstack.call(
            self.chirpstack.devices(), "GetActivation", device_pb2.GetDeviceActivationRequest(dev_eui=dev_eui.hex())
        )
        dev_addr_text = response.device_activation.dev_addr
        if not dev_addr_text:
            raise SessionUnknown(f"{dev_eui.hex()} is not activated")
        context: dict[str, Any] = {"sessionKeyId": response.join_server_context.session_key_id}
        envelope = response.join_server_context.app_s_key
        if envelope.kek_label:
            context["appSKey"] = {"kekLabel": envelope.kek_label, "aesKey": base64.b64encode(envelope.aes_key).decode()}
        return await self._session_from_context(dev_eui, _hex_field(dev_addr_text, "dev_addr", 4), context)

    def seal_downlink(self, session: Session, f_cnt: int, data: bytes) -> bytes:
        """The FRMPayload of a downlink (Dir 1) with this FCnt."""
        return frm_payload_crypt(session.app_s_key, session.dev_addr, f_cnt, DOWNLINK, data)

    async def enqueue(self, dev_eui: bytes, f_port: int, data: bytes, *, confirmed: bool = False) -> Downlink:
        """Encrypt with the FCnt ChirpStack will use (``GetNextFCntDown``) and queue with ``is_encrypted``."""
        if not 1 <= f_port <= 223:
            raise PayloadError("application downlinks use FPort 1..223")
        if self.chirpstack is None:
            raise SessionUnknown("downlinks need the ChirpStack API ([chirpstack] in the configuration)")
        from chirpstack_api.api import device_pb2

        session = await self.session(dev_eui)
        devices = self.chirpstack.devices()
        next_f_cnt = await self.chirpstack.call(
            devices, "GetNextFCntDown", device_pb2.GetDeviceNextFCntDownRequest(dev_eui=dev_eui.hex())
        )
        f_cnt = int(next_f_cnt.f_cnt_down)
        item = device_pb2.DeviceQueueItem(
            dev_eui=dev_eui.hex(),
            confirmed=confirmed,
            f_port=f_port,
            data=self.seal_downlink(session, f_cnt, data),
            is_encrypted=True,
            f_cnt_down=f_cnt,
        )
        queued = await self.chirpstack.call(devices, "Enqueue", device_pb2.EnqueueDeviceQueueItemRequest(queue_item=item))
        return Downlink(str(queued.id), dev_eui, f_cnt, f_port)

    async def run(
        self,
        mqtt: MqttSettings,
        *,
        event_prefix: str = "",
        republish_prefix: str = "jsd-as/v1",
        ready: asyncio.Event | None = None,
    ) -> None:
        """Subscribe to ChirpStack's ``up`` and ``join`` events and republish clear uplinks until cancelled."""
        async with mqtt.client() as client:
            for topic in EVENT_TOPICS:
                await client.subscribe(event_prefix + topic, qos=1)
            log.info("listening for ChirpStack events under %r; ASTKs by KEK label: %s", event_prefix or "application/",
                     ", ".join(sorted(self._astks)))
            if ready is not None:
                ready.set()
            async for message in client.messages:
                await self._handle(client, str(message.topic), message.payload, republish_prefix)

    async def _handle(self, client: Any, topic: str, payload: Any, republish_prefix: str) -> None:
        try:
            event = json.loads(payload)
            if not isinstance(event, dict):
                raise PayloadError("the event is not a JSON object")
        except (ValueError, TypeError):
            log.warning("ignored a non-JSON message on %s", topic)
            return
        try:
            if topic.endswith("/event/join"):
                await self.on_join(event)
                return
            uplink = await self.open_uplink(event)
        except PayloadError as exc:
            info = event.get("deviceInfo") or {}
            dev_eui = str(info.get("devEui", "unknown")).lower()
            base = f"{republish_prefix}/applications/{info.get('applicationId', 'unknown')}/devices/{dev_eui}"
            log.warning("uplink of %s not opened: %s", dev_eui, exc)
            await _publish(client, f"{base}/error", {"f_cnt": event.get("fCnt"), "error": str(exc)})
            return
        if uplink is not None:
            base = f"{republish_prefix}/applications/{uplink.application_id}/devices/{uplink.dev_eui.hex()}"
            await _publish(client, f"{base}/up", uplink.to_json())


async def _publish(client: Any, topic: str, body: Mapping[str, Any]) -> None:
    # Shielded: aiomqtt 2.5 never finishes disconnecting a client whose QoS 1 publish was cancelled midway,
    # so stopping the service (task cancellation) would hang.
    await asyncio.shield(client.publish(topic, json.dumps(body), qos=1))


def load_appserver(path: str | Path) -> tuple[AppServer, dict[str, Any]]:
    """An AppServer and its ``run`` options from TOML (``conf/chirpstack/appserver.toml``)."""
    from jsd_chirpstack.chirpstack import ChirpStackClient

    config = load_toml(path)
    check_keys(config, "appserver", {"mqtt", "astks", "join_server", "chirpstack"}, {"mqtt", "astks"})
    mqtt_table = dict(config["mqtt"])
    run_options: dict[str, Any] = {
        "event_prefix": str(mqtt_table.pop("event_prefix", "")),
        "republish_prefix": str(mqtt_table.pop("republish_prefix", "jsd-as/v1")),
    }
    run_options["mqtt"] = MqttSettings.from_table(mqtt_table, "mqtt")
    astks = {str(label): read_key(file, f"[astks] {label}") for label, file in config["astks"].items()}
    if not astks:
        raise SettingsError("[astks]: at least one ASTK label = file")
    join_server = None
    if "join_server" in config:
        table = config["join_server"]
        check_keys(table, "join_server", {"url", "token_file", "sender_id", "join_eui", "timeout"},
                   {"url", "token_file", "join_eui"})
        join_eui = bytes.fromhex(str(table["join_eui"]))
        if len(join_eui) != 8:
            raise SettingsError("[join_server] join_eui: 16 hex digits")
        join_server = AppSKeyClient(
            str(table["url"]), read_secret(table["token_file"], "[join_server] token_file"),
            str(table.get("sender_id", "jsd-chirpstack-as")), join_eui, timeout=float(table.get("timeout", 5.0)),
        )
    chirpstack = None
    if "chirpstack" in config:
        table = config["chirpstack"]
        check_keys(table, "chirpstack", {"server", "api_token_file", "tls", "ca_cert", "timeout"},
                   {"server", "api_token_file"})
        chirpstack = ChirpStackClient.from_config(table)
    return AppServer(astks, join_server=join_server, chirpstack=chirpstack), run_options
