"""Two ``jsd serve`` instances on one PostgreSQL database and one HSM token, as docs/multi-instance.md sets up.

Joins of one device split over both never reuse a JoinNonce nor lose a DevNonce; each event is published once
(one instance holds the events lease); SIGKILL of the publishing instance hands publishing to the other, and
nothing committed is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from jsd.hsm import Hsm
from jsd.ownership import Ownership, OwnershipPolicy, OwnershipStores
from jsd.registry import NetworkServer, NewDevice, Registry, create_engine, migrate
from jsd.registry.journal import Journal
from jsd_sim.device import build_join_request, open_join_accept, parse_join_accept

from ..daemons import PG_ADMIN_URL, Serve, hsm_environ
from .conftest import OPERATOR, until

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


class Instance(Serve):
    """One ``python -m jsd serve`` with its own state dir and port, on the shared database and token."""

    def __init__(self, name: str, tmp_path: Path, hsm_state: Path, url: str, prefix: str) -> None:
        environ = {
            "JSD_DATABASE_URL": url, **hsm_environ(hsm_state), "JSD_MQTT_HOST": "127.0.0.1", "JSD_MQTT_PORT": "1883",
            "JSD_MQTT_TOPIC_PREFIX": prefix, "JSD_MQTT_FAILOVER_INTERVAL": "0.5", "JSD_MQTT_POLL_INTERVAL": "0.05",
        }  # fmt: skip
        state = tmp_path / f"state-{name}"
        super().__init__(state, workers=1, log=tmp_path / f"serve-{name}.log", log_format="plain", env=environ)
        self.name = name

    def publishes(self) -> bool:
        marks = ("events: this instance publishes", "events: another instance publishes", "lease was lost")
        lines = [line for line in self.log.read_text().splitlines() if any(mark in line for mark in marks)]
        return bool(lines) and marks[0] in lines[-1]

    def connected(self) -> bool:
        return "connected to MQTT broker" in self.log.read_text()


@pytest.fixture
async def shared_database() -> AsyncIterator[str]:
    """A migrated schema of this test on the shared PostgreSQL server."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL)
    async with admin.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_ADMIN_URL}?search_path={schema}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    try:
        yield url
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@pytest.fixture
def instances(tmp_path: Path, hsm_state: Path, shared_database: str, prefix: str) -> Iterator[list[Instance]]:
    pair = [Instance(name, tmp_path, hsm_state, shared_database, prefix) for name in ("a", "b")]
    try:
        yield pair
    finally:
        for instance in pair:
            instance.stop()


async def test_two_instances_share_joins_publish_once_and_fail_over(
    instances: list[Instance], shared_database: str, hsm: Hsm, subscribe: Any, prefix: str
) -> None:
    engine = create_engine(shared_database)
    try:
        registry, store = Registry(engine), Journal(engine)
        token, app_key, dev_eui = secrets.token_urlsafe(16), secrets.token_bytes(16), secrets.token_bytes(8)
        label = f"ns-{uuid.uuid4().hex[:8]}"
        await hsm.import_kek(label, secrets.token_bytes(16))
        await registry.add_network_server(
            NetworkServer(
                net_id=bytes.fromhex(HOME), name="home", kek_label=label,
                token_hash=hashlib.sha256(token.encode()).hexdigest(), cert_fingerprint=None,
                answer_url=None, async_mode=False,
            )
        )  # fmt: skip
        await registry.add_device(
            NewDevice(
                dev_eui=dev_eui, join_eui=bytes.fromhex(JOIN_EUI), mac_version="1.0.3", hsm_group="default",
                app_key_blob=await hsm.import_root_key("default", app_key), nwk_key_blob=None,
                home_net_id=bytes.fromhex(HOME), astk_label=None, owner_account=None, name=None,
            )
        )  # fmt: skip
        service = Ownership.build(OwnershipStores.on(engine), registry, hsm, OwnershipPolicy())
        _, admin = await service.accounts.create_account(OPERATOR, "admin", "operator", None)

        sub = await subscribe(f"{prefix}/#")
        a, b = instances
        a.start()
        b.start()
        await until(lambda: a.connected() or b.connected(), 20, "an instance connected to the broker")

        # 1. Concurrent JoinReqs of one device (LoRaWAN 1.0.3: any unused DevNonce), split over both instances.
        dev_nonces = secrets.SystemRandom().sample(range(65536), 40)

        async def join(session: aiohttp.ClientSession, instance: Instance, dev_nonce: int) -> tuple[int, str, int]:
            body = {
                "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": dev_nonce,
                "MessageType": "JoinReq", "MACVersion": "1.0.3",
                "PHYPayload": build_join_request(app_key, bytes.fromhex(JOIN_EUI), dev_eui, dev_nonce).hex(),
                "DevEUI": dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
            }  # fmt: skip
            url = f"http://127.0.0.1:{instance.port}/"
            async with session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await response.json(content_type=None)
            code = answer["Result"]["ResultCode"]
            join_nonce = -1
            if code == "Success":
                join_nonce = parse_join_accept(
                    open_join_accept(app_key, bytes.fromhex(answer["PHYPayload"]))
                ).join_nonce
            return response.status, code, join_nonce

        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(join(session, (a, b)[i % 2], n) for i, n in enumerate(dev_nonces)))
        assert {status for status, _, _ in results} == {200}
        accepted = {n: jn for n, (_, code, jn) in zip(dev_nonces, results, strict=True) if code == "Success"}
        # Losing the JoinNonce race too often (nonce_retries) is the only refusal two busy instances may give.
        assert {code for _, code, _ in results} <= {"Success", "Other"}, results
        assert len(accepted) >= len(dev_nonces) // 2
        assert len(set(accepted.values())) == len(accepted), "a JoinNonce was handed out twice"
        device = await registry.get_device(dev_eui)
        assert device is not None
        assert device.nonces.join_nonce == max(accepted.values()) == len(accepted)
        assert set(device.nonces.used_dev_nonces) == set(accepted), "a DevNonce update was lost"

        # 2. N ownership changes, made on both instances: each event published exactly once.
        maker = a.request("POST", "/api/v1/accounts", admin.key, {"id": "maker", "kind": "manufacturer"})
        key = maker["api_key"]["key"]
        euis = [os.urandom(8).hex() for _ in range(30)]
        for i, eui in enumerate(euis):
            (a, b)[i % 2].request(
                "POST", "/api/v1/devices", key,
                {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "app_key": secrets.token_hex(16)},
            )  # fmt: skip
        committed = {e.event_id for e in await store.events(account=None, after=None, limit=1000)}
        assert len(committed) >= len(accepted) + len(euis)

        def seen() -> Counter[str]:
            events = [json.loads(m.payload) for m in sub.messages if m.payload.startswith(b"{")]
            return Counter(event["event_id"] for event in events if "event_id" in event)

        await sub.wait(lambda _: committed <= set(seen()), within=30, what="every event")
        await asyncio.sleep(1.5)  # a second publisher would have sent its copies by now
        twice = {event_id: n for event_id, n in seen().items() if n > 1}
        assert not twice, f"{len(twice)} events published more than once"
        assert [a.publishes(), b.publishes()].count(True) == 1, "one instance holds the events lease"
        assert [a.connected(), b.connected()].count(True) == 1, "the standby does not even connect to the broker"

        # 3. SIGKILL of the publishing instance: the other takes over; nothing committed is lost.
        publisher, standby = (a, b) if a.publishes() else (b, a)
        publisher.kill()
        await until(standby.publishes, 15, "the standby to take over publishing")
        more = [os.urandom(8).hex() for _ in range(10)]
        for eui in more:
            standby.request(
                "POST", "/api/v1/devices", key,
                {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "app_key": secrets.token_hex(16)},
            )  # fmt: skip
        everything = {e.event_id for e in await store.events(account=None, after=None, limit=1000)}
        assert len(everything) == len(committed) + len(more)
        await sub.wait(lambda _: everything <= set(seen()), within=30, what="every event after the failover")
        deadline = time.monotonic() + 15  # the new publisher also acknowledges what the old one had sent
        while await store.pending_events(1):
            assert time.monotonic() < deadline, "the outbox was not emptied by the new publisher"
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
