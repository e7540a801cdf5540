"""The real ``jsd serve`` (supervisor and two workers) killed with SIGKILL between commit and publish.

Events are committed by the daemon itself (REST imports) while its broker is away, so they sit in the outbox;
the whole process group is killed; after the broker and the daemon come back, every one of them is published
with the event_id it was committed with.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jsd.events.schema import check
from jsd.hsm import Hsm
from jsd.ownership import Ownership, OwnershipPolicy, OwnershipStores
from jsd.registry import Registry, create_engine
from jsd.registry.journal import Journal

from ..daemons import Serve
from .conftest import OPERATOR


@pytest.fixture
def serve(tmp_path: Path, mosquitto: Any, prefix: str) -> Iterator[Serve]:
    environ = {
        "JSD_MQTT_HOST": "127.0.0.1", "JSD_MQTT_PORT": str(mosquitto.port), "JSD_MQTT_TOPIC_PREFIX": prefix,
        "JSD_MQTT_RETRY_MIN": "0.05", "JSD_MQTT_RETRY_MAX": "0.2",
    }  # fmt: skip
    process = Serve(tmp_path / "state", log=tmp_path / "serve.log", env=environ)
    try:
        yield process
    finally:
        process.stop()


async def test_sigkill_between_commit_and_publish_republishes_on_restart(
    mosquitto: Any, serve: Serve, subscribe: Any, hsm: Hsm, prefix: str
) -> None:
    mosquitto.stop()
    serve.start()
    engine = create_engine(f"sqlite+aiosqlite:///{serve.state / 'jsd.sqlite3'}")
    try:
        store = Journal(engine)
        service = Ownership.build(OwnershipStores.on(engine), Registry(engine), hsm, OwnershipPolicy())
        _, admin = await service.accounts.create_account(OPERATOR, "admin", "operator", None)
        maker = serve.request("POST", "/api/v1/accounts", admin.key, {"id": "maker", "kind": "manufacturer"})
        euis = [os.urandom(8).hex() for _ in range(3)]
        for eui in euis:
            serve.request("POST", "/api/v1/devices", maker["api_key"]["key"],
                          {"dev_eui": eui, "join_eui": "70b3d57ed0000001", "mac_version": "1.1",
                           "generate_keys": True})  # fmt: skip
        committed = await store.events(account=None, after=None, limit=100)
        assert sorted(e.type for e in committed) == ["device.keys_exported"] * 3 + ["device.precommissioned"] * 3
        assert {e.event_id for e in await store.pending_events(100)} == {e.event_id for e in committed}

        serve.kill()
        mosquitto.start()
        sub = await subscribe(f"{prefix}/accounts/#", port=mosquitto.port)
        serve.start()
        wanted = {e.event_id for e in committed}
        await sub.wait(lambda ms: wanted <= {m.json["event_id"] for m in ms}, within=20, what="every event")
        for message in sub.messages:
            assert check(message.json) == [], message.json
            assert message.topic.startswith(f"{prefix}/accounts/maker/devices/")
        assert {m.json["dev_eui"] for m in sub.messages} == set(euis)
        deadline = time.monotonic() + 10
        while await store.pending_events(1):
            assert time.monotonic() < deadline, "the outbox was not emptied after the restart"
            await asyncio.sleep(0.05)
        connected = [line for line in serve.log.read_text().splitlines() if "connected to MQTT broker" in line]
        assert len(connected) == 1, "one process of the daemon, worker 0, publishes"
    finally:
        await engine.dispose()
