"""The bridge end to end: the real daemon (REST API over HTTP), the fake ChirpStack (real gRPC), real Mosquitto.

Accounts are made as the daemon's local operator (as ``jsd accounts create`` does); every other step goes
through HTTP with the accounts' own API keys, as a manufacturer and a subscriber would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
from aiohttp import web
from chirpstack_api.common import common_pb2

from jsd.app import HSM, OWNERSHIP, build_app, softhsm_module
from jsd.config import load_settings
from jsd.lorawan.tr005 import DeviceQr, build_qr
from jsd.ownership import SCOPES, AccountKind, Principal
from jsd_nsadapter.bridge import Bridge, BridgeConfig, Link, PassAbandoned
from jsd_nsadapter.contract import ERROR_TAG, LINK_TAG, OWNER_TOKEN_TAG, QR_TAG, RELEASED_TAG

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
JOIN_EUI = "70b3d57ed0000001"
NET_ID = "000013"


@dataclass
class Daemon:
    """The running daemon and the keys of a manufacturer and a subscriber (``acme``)."""

    url: str
    maker_key: str
    acme_key: str
    http: aiohttp.ClientSession

    async def call(self, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.url}api/v1{path}", json=body,
                                     headers={"Authorization": f"Bearer {key}"}) as response:
            return response.status, (await response.json(content_type=None) if response.status != 204 else None)

    async def import_device(self) -> tuple[str, str]:
        """A manufacturer's new device: its DevEUI and owner token."""
        dev_eui = secrets.token_hex(8)
        status, body = await self.call(self.maker_key, "POST", "/devices", {
            "dev_eui": dev_eui, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "app_key": secrets.token_hex(16),
        })
        assert status == 201, body
        return dev_eui, body["owner_token"]

    async def claim(self, dev_eui: str, token: str) -> None:
        status, body = await self.call(self.acme_key, "POST", "/claims", {"dev_eui": dev_eui, "owner_token": token})
        assert status == 200, body

    async def release(self, dev_eui: str) -> str:
        status, body = await self.call(self.acme_key, "POST", f"/devices/{dev_eui}/release", {})
        assert status == 200, body
        return str(body["owner_token"])

    async def device(self, key: str, dev_eui: str) -> dict[str, Any] | None:
        status, body = await self.call(key, "GET", f"/devices/{dev_eui}")
        return body if status == 200 else None


async def daemon_with_accounts(url: str, app: web.Application) -> AsyncIterator[Daemon]:
    """Accounts made as the daemon's local operator (as ``jsd accounts create`` does), then HTTP only."""
    service = app[OWNERSHIP]
    local = Principal(account="_local", kind=AccountKind.OPERATOR, scopes=frozenset(SCOPES), key_id=None,
                      source="test")
    _, maker = await service.accounts.create_account(local, "maker", "manufacturer", "Maker")
    _, acme = await service.accounts.create_account(local, "acme", "subscriber", "Acme")
    async with aiohttp.ClientSession() as http:
        yield Daemon(url, maker.key, acme.key, http)


@pytest.fixture
async def daemon(jsd_server: Any) -> AsyncIterator[Daemon]:
    async for ready in daemon_with_accounts(jsd_server.url, jsd_server.app):
        yield ready


MakeLink = Callable[..., Awaitable[Link]]


@pytest.fixture
async def make_link(daemon: Daemon, chirpstack: Any, chirpstack_token_file: Path,
                    tmp_path: Path) -> AsyncIterator[MakeLink]:
    made: list[Link] = []

    async def make(name: str = "acme-cs", **extra: Any) -> Link:
        key_file = tmp_path / f"{name}.key"
        key_file.write_text(extra.pop("api_key", daemon.acme_key))
        config = BridgeConfig.from_mapping({"links": [{
            "name": name, "jsd_url": daemon.url, "api_key_file": str(key_file), "net_id": NET_ID,
            "chirpstack": {"server": chirpstack.target, "api_token_file": str(chirpstack_token_file),
                           "application_id": chirpstack.application_id,
                           "device_profile_id": chirpstack.device_profile_id, "timeout": 2, "max_list_rate": 50},
            **extra,
        }]})
        link = Link.from_config(config.links[0])
        made.append(link)
        return link

    yield make
    for link in made:
        await link.aclose()


async def test_claimed_device_appears_without_keys_and_gets_the_home_net_id(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    await daemon.claim(dev_eui, token)
    report = await link.reconcile()
    assert report.created == [dev_eui] and not report.errors
    device = chirpstack.device(dev_eui)
    assert device.join_eui == JOIN_EUI and dict(device.tags) == {LINK_TAG: "acme-cs"}
    assert device.application_id == chirpstack.application_id
    assert device.device_profile_id == chirpstack.device_profile_id
    assert dev_eui not in chirpstack.state.keys and "CreateKeys" not in chirpstack.state.calls
    view = await daemon.device(daemon.acme_key, dev_eui)
    assert view is not None and view["home_net_id"] == NET_ID
    again = await link.reconcile()
    assert not again.changed and not again.errors


async def test_a_10_device_is_not_created_with_a_11_device_profile(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    chirpstack.state.profiles[chirpstack.device_profile_id].mac_version = common_pb2.MacVersion.LORAWAN_1_1_0
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    await daemon.claim(dev_eui, token)
    report = await link.reconcile()
    assert not report.created and "needs a 1.0.x device profile" in report.errors[0]
    assert chirpstack.device(dev_eui) is None


async def test_released_device_is_deleted(daemon: Daemon, chirpstack: Any, make_link: MakeLink) -> None:
    link = await make_link()
    kept, kept_token = await daemon.import_device()
    gone, gone_token = await daemon.import_device()
    await daemon.claim(kept, kept_token)
    await daemon.claim(gone, gone_token)
    await link.reconcile()
    await daemon.release(gone)
    report = await link.reconcile()
    assert report.removed == [gone]
    assert chirpstack.device(gone) is None and chirpstack.device(kept) is not None


async def test_released_device_is_disabled_when_the_link_says_so(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    link = await make_link(on_release="disable")
    dev_eui, token = await daemon.import_device()
    await daemon.claim(dev_eui, token)
    await link.reconcile()
    new_token = await daemon.release(dev_eui)
    assert (await link.reconcile()).disabled == [dev_eui]
    device = chirpstack.device(dev_eui)
    assert device.is_disabled and device.tags[RELEASED_TAG] == "true"
    await daemon.claim(dev_eui, new_token)
    assert (await link.reconcile()).enabled == [dev_eui]
    device = chirpstack.device(dev_eui)
    assert not device.is_disabled and RELEASED_TAG not in device.tags


async def test_chirpstack_down_during_claims_is_repaired_by_a_later_pass(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    link = await make_link()
    await chirpstack.stop()
    claimed = []
    for _ in range(3):
        dev_eui, token = await daemon.import_device()
        await daemon.claim(dev_eui, token)
        claimed.append(dev_eui)
    with pytest.raises(PassAbandoned):
        await link.reconcile()
    await chirpstack.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            report = await link.reconcile()
            break
        except PassAbandoned:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert sorted(report.created) == sorted(claimed)
    assert all(chirpstack.device(d) is not None for d in claimed)


async def test_an_unreachable_daemon_never_looks_like_no_claims(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    await daemon.claim(dev_eui, token)
    await link.reconcile()
    revoked = await make_link("acme-cs", api_key="jsd_000000000000_" + "x" * 43)
    with pytest.raises(PassAbandoned, match="401"):
        await revoked.reconcile()
    assert chirpstack.device(dev_eui) is not None


async def test_devices_without_our_tag_are_never_touched(daemon: Daemon, chirpstack: Any, make_link: MakeLink) -> None:
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    chirpstack.add_device(dev_eui, description="the operator's", tags={"site": "roof"})
    other_link = chirpstack.add_device(secrets.token_hex(8), tags={LINK_TAG: "another-link"})
    plain = chirpstack.add_device(secrets.token_hex(8))
    await daemon.claim(dev_eui, token)
    report = await link.reconcile()
    assert report.conflicts == [dev_eui] and not report.created and not report.removed
    assert dict(chirpstack.device(dev_eui).tags) == {"site": "roof"}
    assert chirpstack.device(other_link.dev_eui) is not None and chirpstack.device(plain.dev_eui) is not None
    assert "Update" not in chirpstack.state.calls and "Delete" not in chirpstack.state.calls


async def test_owner_token_tag_claims_the_device(daemon: Daemon, chirpstack: Any, make_link: MakeLink) -> None:
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    chirpstack.add_device(dev_eui, description="added in the UI", tags={OWNER_TOKEN_TAG: token, "site": "roof"})
    report = await link.reconcile()
    assert report.claimed == [dev_eui] and not report.created and not report.errors
    view = await daemon.device(daemon.acme_key, dev_eui)
    assert view is not None and view["state"] == "claimed" and view["owner"] == "acme"
    assert view["home_net_id"] == NET_ID
    device = chirpstack.device(dev_eui)
    assert dict(device.tags) == {"site": "roof", LINK_TAG: "acme-cs"}
    assert device.join_eui == JOIN_EUI and device.description == "added in the UI"
    await daemon.release(dev_eui)
    assert (await link.reconcile()).removed == [dev_eui]  # adopted: the bridge manages it from now on


async def test_tr005_tag_claims_the_device(daemon: Daemon, chirpstack: Any, make_link: MakeLink) -> None:
    link = await make_link()
    dev_eui, token = await daemon.import_device()
    qr = build_qr(DeviceQr(join_eui=bytes.fromhex(JOIN_EUI), dev_eui=bytes.fromhex(dev_eui), owner_token=token))
    chirpstack.add_device(dev_eui, tags={QR_TAG: qr})
    other, other_token = await daemon.import_device()
    wrong_qr = build_qr(DeviceQr(join_eui=bytes.fromhex(JOIN_EUI), dev_eui=bytes.fromhex(dev_eui),
                                 owner_token=other_token))
    chirpstack.add_device(other, tags={QR_TAG: wrong_qr})
    report = await link.reconcile()
    assert report.claimed == [dev_eui] and report.claim_refused == [other]
    assert dict(chirpstack.device(dev_eui).tags) == {LINK_TAG: "acme-cs"}
    assert f"DevEUI {dev_eui}" in chirpstack.device(other).tags[ERROR_TAG]
    maker_view = await daemon.device(daemon.maker_key, other)
    assert maker_view is not None and maker_view["state"] == "unclaimed"


async def test_bad_token_is_reported_on_the_device_and_nothing_is_claimed(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    link = await make_link()
    dev_eui, _ = await daemon.import_device()
    chirpstack.add_device(dev_eui, tags={OWNER_TOKEN_TAG: secrets.token_hex(16)})
    report = await link.reconcile()
    assert report.claim_refused == [dev_eui] and not report.claimed and not report.created
    tags = dict(chirpstack.device(dev_eui).tags)
    assert OWNER_TOKEN_TAG not in tags and LINK_TAG not in tags
    assert tags[ERROR_TAG].startswith("claim refused: ") and "403" in tags[ERROR_TAG]
    assert await daemon.device(daemon.acme_key, dev_eui) is None
    maker_view = await daemon.device(daemon.maker_key, dev_eui)
    assert maker_view is not None and maker_view["state"] == "unclaimed"
    again = await link.reconcile()  # the request tag is gone: no retry into the claim rate limit
    assert not again.changed
    status, events = await daemon.call(daemon.acme_key, "GET", f"/events?dev_eui={dev_eui}")
    assert status == 200 and [e["type"] for e in events["events"]] == ["claim.failed"]  # and in our events


async def test_claim_request_waits_while_the_daemon_is_unreachable(
    daemon: Daemon, chirpstack: Any, make_link: MakeLink
) -> None:
    dev_eui, token = await daemon.import_device()
    chirpstack.add_device(dev_eui, tags={OWNER_TOKEN_TAG: token})
    link = await make_link()
    link.account = "acme"
    link.js.base_url = "http://127.0.0.1:9/api/v1"  # nothing listens on the discard port
    with pytest.raises(PassAbandoned):
        await link.reconcile()
    assert chirpstack.device(dev_eui).tags[OWNER_TOKEN_TAG] == token


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@contextlib.asynccontextmanager
async def running(bridge: Bridge) -> AsyncIterator[None]:
    task = asyncio.create_task(bridge.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_events_converge_a_device_at_once(
    daemon: Daemon, chirpstack: Any, chirpstack_token_file: Path, tmp_path: Path, topic_prefix: str
) -> None:
    """An event in the daemon's topic layout (docs/api.md) makes the bridge act long before its next pass."""
    key_file = tmp_path / "acme.key"
    key_file.write_text(daemon.acme_key)
    config = BridgeConfig.from_mapping({
        "bridge": {"interval": 3600},
        "mqtt": {"server": "mqtt://127.0.0.1:1883", "topic_prefix": f"{topic_prefix}/jsd/v1"},
        "links": [{"name": "acme-cs", "jsd_url": daemon.url, "api_key_file": str(key_file), "chirpstack": {
            "server": chirpstack.target, "api_token_file": str(chirpstack_token_file),
            "application_id": chirpstack.application_id, "device_profile_id": chirpstack.device_profile_id}}],
    })
    bridge = await Bridge.start(config)
    dev_eui, token = await daemon.import_device()
    try:
        async with running(bridge), aiomqtt.Client("127.0.0.1", 1883) as mqtt:
            await daemon.claim(dev_eui, token)
            topic = f"{topic_prefix}/jsd/v1/accounts/acme/devices/{dev_eui}/events"
            claimed = {"event_id": secrets.token_hex(16), "seq": 1, "type": "device.claimed", "account": "acme",
                       "dev_eui": dev_eui, "time": "2026-11-27T10:00:00Z", "data": {"join_eui": JOIN_EUI}}
            async with asyncio.timeout(10):
                while chirpstack.device(dev_eui) is None:  # until the bridge has subscribed and acted
                    await mqtt.publish(f"{topic}/device.claimed", json.dumps(claimed), qos=1)
                    await asyncio.sleep(0.2)
                passes = bridge.passes
                await daemon.release(dev_eui)
                released = dict(claimed, type="device.released", seq=2, data={})
                await mqtt.publish(f"{topic}/device.released", json.dumps(released), qos=1)
                await eventually(lambda: chirpstack.device(dev_eui) is None)
            assert bridge.passes == passes  # the event did it, not a pass
    finally:
        await bridge.aclose()



@pytest.fixture
async def publishing_daemon(hsm_state: Path, database: Any, tmp_path: Path, topic_prefix: str) -> AsyncIterator[Daemon]:
    """The real daemon as ``jsd_server`` runs it, but publishing its events to Mosquitto under this test's prefix."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(None, environ={
        "JSD_GENERAL_STATE_DIR": str(tmp_path / "state"),
        "JSD_DATABASE_URL": database.url,
        "JSD_HSM_MODULE": softhsm_module(),
        "JSD_HSM_TOKEN_LABEL": "jsd-test",
        "JSD_HSM_PIN_FILE": str(hsm_state / "hsm-pin"),
        "JSD_HSM_SOFTHSM_CONF": os.environ["SOFTHSM2_CONF"],
        "JSD_SERVER_PORT": str(port),
        "JSD_MQTT_HOST": "127.0.0.1",
        "JSD_MQTT_TOPIC_PREFIX": f"{topic_prefix}/jsd/v1",
    })
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await app[HSM].ensure_storage_kek("default")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async for ready in daemon_with_accounts(f"http://127.0.0.1:{port}/", app):
            yield ready
    finally:
        await runner.cleanup()


async def test_the_daemons_own_events_drive_the_bridge(
    publishing_daemon: Daemon, chirpstack: Any, chirpstack_token_file: Path, tmp_path: Path, topic_prefix: str
) -> None:
    """Claim and release over the REST API; the daemon's own MQTT events make the bridge act between passes."""
    key_file = tmp_path / "acme.key"
    key_file.write_text(publishing_daemon.acme_key)
    config = BridgeConfig.from_mapping({
        "bridge": {"interval": 3600},
        "mqtt": {"server": "mqtt://127.0.0.1:1883", "topic_prefix": f"{topic_prefix}/jsd/v1"},
        "links": [{"name": "acme-cs", "jsd_url": publishing_daemon.url, "api_key_file": str(key_file),
                   "chirpstack": {"server": chirpstack.target, "api_token_file": str(chirpstack_token_file),
                                  "application_id": chirpstack.application_id,
                                  "device_profile_id": chirpstack.device_profile_id}}],
    })
    bridge = await Bridge.start(config)
    dev_eui, token = await publishing_daemon.import_device()
    try:
        async with running(bridge):
            # The start-up pass, then the one every (re)subscription requests: after it, only events act.
            await eventually(lambda: bridge.passes >= 2)
            passes = bridge.passes
            await publishing_daemon.claim(dev_eui, token)
            await eventually(lambda: chirpstack.device(dev_eui) is not None)
            await publishing_daemon.release(dev_eui)
            await eventually(lambda: chirpstack.device(dev_eui) is None)
            assert bridge.passes == passes  # the events did it, not a pass
    finally:
        await bridge.aclose()
