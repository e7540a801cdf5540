"""The application side: a real join on the daemon, a device-encrypted uplink in a ChirpStack event, clear out.

The AppSKey and the envelope come from a real JoinReq to the daemon (``jsd_server``) sent by ``jsd_sim``'s
network server for ``jsd_sim``'s device, which derives its own session keys. The device-side FRMPayload
encryption here uses AES-CTR from ``cryptography`` directly, not the plugin's code. Events are built from the
real ``chirpstack_api.integration`` messages in protobuf JSON, as ChirpStack's MQTT integration sends them,
and go through the real Mosquitto.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import pytest
from chirpstack_api.api import device_pb2
from chirpstack_api.common import common_pb2
from chirpstack_api.integration import integration_pb2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from google.protobuf import json_format

from jsd_chirpstack.appserver import AppServer, AppSKeyClient, SessionUnknown
from jsd_chirpstack.chirpstack import ChirpStackClient
from jsd_nsadapter.settings import MqttSettings

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
NET_ID = "000013"


def device_encrypt(app_s_key: bytes, dev_addr: bytes, f_cnt: int, direction: int, data: bytes) -> bytes:
    """LoRaWAN FRMPayload encryption written as AES-CTR from A_1 (i sits in the last byte, which CTR counts)."""
    a1 = b"\x01" + bytes(4) + bytes([direction]) + dev_addr[::-1] + f_cnt.to_bytes(4, "little") + b"\x00\x01"
    encryptor = Cipher(algorithms.AES(app_s_key), modes.CTR(a1)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


@dataclass
class Joined:
    dev_eui: bytes
    join_eui: bytes
    dev_addr: bytes
    app_s_key: bytes
    astk_label: str
    astk: bytes
    envelope: Any
    session_key_id: str
    as_token: str


@pytest.fixture
async def joined(jsd_server: Any, sim_device_factory: Any, sim_ns_factory: Any) -> Joined:
    """A 1.0.3 device joined through the real daemon; its session keys as the device derived them."""
    token, kek = secrets.token_hex(16), secrets.token_bytes(16)
    kek_label = await jsd_server.add_network_server(NET_ID, kek, token)
    as_token = secrets.token_hex(16)
    await jsd_server.add_network_server("0000aa", secrets.token_bytes(16), as_token)  # the application server
    astk = secrets.token_bytes(16)
    device = sim_device_factory("1.0.3")
    astk_label = await jsd_server.add_device(
        device.dev_eui.hex(), device.join_eui.hex(), "1.0.3", device.app_key, None, NET_ID, astk
    )
    ns = await sim_ns_factory(jsd_server.url, NET_ID, token=token, kek_label=kek_label, kek=kek,
                              astks={astk_label: astk})
    outcome = await ns.join(device)
    assert outcome.ok, outcome.answer
    session = outcome.device_session
    assert session is not None and outcome.session_key_id and outcome.app_s_key_envelope
    return Joined(device.dev_eui, device.join_eui, session.dev_addr, session.keys.app_s_key, astk_label, astk,
                  outcome.app_s_key_envelope, outcome.session_key_id, as_token)


def uplink_event(j: Joined, f_cnt: int, f_port: int, clear: bytes, *, envelope: bool = True) -> dict[str, Any]:
    """An ``up`` event as ChirpStack's MQTT integration sends it for an end-to-end device (protobuf JSON)."""
    context = common_pb2.JoinServerContext(session_key_id=j.session_key_id)
    if envelope:
        context.app_s_key.CopyFrom(common_pb2.KeyEnvelope(kek_label=j.envelope.kek_label, aes_key=j.envelope.aes_key))
    event = integration_pb2.UplinkEvent(
        deduplication_id=str(uuid.uuid4()),
        device_info=integration_pb2.DeviceInfo(
            tenant_id=str(uuid.uuid4()), application_id="5f1c2d0e-aaaa-4bbb-8ccc-000000000001",
            application_name="acme", device_name="meter", dev_eui=j.dev_eui.hex(), tags={"jsd_link": "acme"},
        ),
        dev_addr=j.dev_addr.hex(), adr=True, dr=5, f_cnt=f_cnt, f_port=f_port, confirmed=False,
        data=device_encrypt(j.app_s_key, j.dev_addr, f_cnt, 0, clear),
        join_server_context=context, region_config_id="eu868",
    )
    event.time.GetCurrentTime()
    return json_format.MessageToDict(event)


async def test_uplink_with_the_envelope_comes_out_in_clear(joined: Joined) -> None:
    server = AppServer({joined.astk_label: joined.astk})
    event = uplink_event(joined, 70000, 10, b"temperature=21.5")
    assert "appSKey" in event["joinServerContext"] and event["data"] != base64.b64encode(b"temperature=21.5").decode()
    uplink = await server.open_uplink(event)
    assert uplink is not None
    assert uplink.data == b"temperature=21.5"
    assert (uplink.dev_eui, uplink.dev_addr, uplink.f_cnt, uplink.f_port) == (joined.dev_eui, joined.dev_addr, 70000, 10)
    assert uplink.session_key_id == joined.session_key_id


async def test_only_a_session_key_id_fetches_the_app_s_key_with_app_s_key_req(jsd_server: Any, joined: Joined) -> None:
    client = AppSKeyClient(jsd_server.url, joined.as_token, "as-acme", joined.join_eui)
    server = AppServer({joined.astk_label: joined.astk}, join_server=client)
    uplink = await server.open_uplink(uplink_event(joined, 1, 2, b"\x01\x02\x03", envelope=False))
    assert uplink is not None and uplink.data == b"\x01\x02\x03"
    without = AppServer({joined.astk_label: joined.astk})
    with pytest.raises(SessionUnknown, match="no Join Server"):
        await without.open_uplink(uplink_event(joined, 1, 2, b"x", envelope=False))
    refused = AppServer({joined.astk_label: joined.astk},
                        join_server=AppSKeyClient(jsd_server.url, "wrong-token", "as-acme", joined.join_eui))
    with pytest.raises(SessionUnknown, match="UnknownSender"):
        await refused.open_uplink(uplink_event(joined, 1, 2, b"x", envelope=False))


async def test_unknown_astk_and_fport_zero(joined: Joined) -> None:
    server = AppServer({"another-label": secrets.token_bytes(16)})
    with pytest.raises(SessionUnknown, match="no ASTK labelled"):
        await server.open_uplink(uplink_event(joined, 3, 1, b"abc"))
    mac_only = uplink_event(joined, 4, 0, b"")
    assert await server.open_uplink(mac_only) is None


@contextlib.asynccontextmanager
async def running(server: AppServer, prefix: str) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(
        server.run(MqttSettings("127.0.0.1", 1883), event_prefix=f"{prefix}/", republish_prefix=f"{prefix}/clear",
                   ready=ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_uplink_over_mosquitto_is_republished_in_clear(joined: Joined, topic_prefix: str) -> None:
    server = AppServer({joined.astk_label: joined.astk})
    event = uplink_event(joined, 5, 42, b"hello from the field")
    app = event["deviceInfo"]["applicationId"]
    async with aiomqtt.Client("127.0.0.1", 1883) as client, running(server, topic_prefix):
        await client.subscribe(f"{topic_prefix}/clear/#", qos=1)
        join = integration_pb2.JoinEvent(
            device_info=integration_pb2.DeviceInfo(dev_eui=joined.dev_eui.hex(), application_id=app),
            dev_addr=joined.dev_addr.hex(),
            join_server_context=common_pb2.JoinServerContext(session_key_id=joined.session_key_id),
        )
        device_topic = f"{topic_prefix}/application/{app}/device/{joined.dev_eui.hex()}/event"
        await client.publish(f"{device_topic}/join", json_format.MessageToJson(join), qos=1)
        await client.publish(f"{device_topic}/up", json.dumps(event), qos=1)
        bad = dict(event, joinServerContext={})
        await client.publish(f"{device_topic}/up", json.dumps(bad), qos=1)
        received: dict[str, Any] = {}
        async with asyncio.timeout(5):
            async for message in client.messages:
                received[str(message.topic)] = json.loads(message.payload)  # type: ignore[arg-type]
                if len(received) == 2:
                    break
    base = f"{topic_prefix}/clear/applications/{app}/devices/{joined.dev_eui.hex()}"  # as documented
    assert set(received) == {f"{base}/up", f"{base}/error"}
    up = received[f"{base}/up"]
    assert base64.b64decode(up["data"]) == b"hello from the field"
    assert (up["dev_eui"], up["f_cnt"], up["f_port"]) == (joined.dev_eui.hex(), 5, 42)
    error = received[f"{base}/error"]
    assert error["f_cnt"] == 5 and "neither" in error["error"]


async def test_downlink_is_encrypted_for_enqueue(joined: Joined, chirpstack: Any, chirpstack_token: str) -> None:
    chirpstack.add_device(joined.dev_eui.hex(), join_eui=joined.join_eui.hex())
    chirpstack.state.activations[joined.dev_eui.hex()] = device_pb2.GetDeviceActivationResponse(
        device_activation=device_pb2.DeviceActivation(dev_eui=joined.dev_eui.hex(), dev_addr=joined.dev_addr.hex()),
        join_server_context=common_pb2.JoinServerContext(
            session_key_id=joined.session_key_id,
            app_s_key=common_pb2.KeyEnvelope(kek_label=joined.envelope.kek_label, aes_key=joined.envelope.aes_key),
        ),
    )
    chirpstack.state.f_cnt_down[joined.dev_eui.hex()] = 7
    client = ChirpStackClient(chirpstack.target, chirpstack_token)
    server = AppServer({joined.astk_label: joined.astk}, chirpstack=client)
    try:
        first = await server.enqueue(joined.dev_eui, 5, b"open valve")
        second = await server.enqueue(joined.dev_eui, 5, b"close valve", confirmed=True)
    finally:
        await client.aclose()
    assert (first.f_cnt, second.f_cnt) == (7, 8)
    queue = chirpstack.state.queues[joined.dev_eui.hex()]
    assert [item.id for item in queue] == [first.id, second.id]
    for item, clear in zip(queue, (b"open valve", b"close valve"), strict=True):
        assert item.is_encrypted and item.f_port == 5
        assert item.data != clear
        assert device_encrypt(joined.app_s_key, joined.dev_addr, item.f_cnt_down, 1, item.data) == clear
    assert queue[1].confirmed
