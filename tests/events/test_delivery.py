"""Outbox rows live until the broker's PUBACK; an unacknowledged event is published again (same event_id).

A relay between the daemon and the shared broker holds back the broker's answers: the integrator already has
the event, the daemon has no PUBACK yet, so the event must still be in the outbox. Cutting the connection
then makes the daemon reconnect and publish it again: a repeat the integrator drops by `event_id`. On
PostgreSQL an event whose transaction is slow to commit is not overtaken by a later one of the same device.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import pytest
from sqlalchemy import insert

from jsd.registry import create_engine
from jsd.registry.tables import events, outbox

JOIN_EUI = "70b3d57ed0000001"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_outbox_row_outlives_the_publish_until_the_puback(
    proxy: Any, daemon: Any, subscribe: Any, prefix: str, protocol: str
) -> None:
    d = await daemon(
        mqtt__host="127.0.0.1", mqtt__port=proxy.port, mqtt__topic_prefix=prefix, mqtt__protocol=protocol,
        mqtt__retry_min=0.05, mqtt__retry_max=0.2, mqtt__poll_interval=0.02,
    )  # fmt: skip
    status = await subscribe(f"{prefix}/status")
    await status.wait(lambda ms: any(m.payload == b"online" for m in ms), what="the daemon online")
    sub = await subscribe(f"{prefix}/accounts/#")
    maker, _ = await d.account("maker", "manufacturer")

    proxy.hold()
    eui = secrets.token_hex(8)
    await d.service.devices.add_device(maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4",
                                       "app_key": secrets.token_hex(16)})  # fmt: skip
    (stored,) = await d.store.events(account=None, after=None, limit=10, dev_eui=eui)
    (first,) = await sub.wait(lambda ms: ms, what="the event at the integrator")
    assert first.json["event_id"] == stored.event_id
    assert [e.event_id for e in await d.store.pending_events(10)] == [stored.event_id], (
        "the broker has the event but the daemon has no PUBACK: the outbox row must still be there"
    )

    proxy.cut()
    await sub.wait(lambda ms: len(ms) == 2, what="the event published again after reconnecting")
    assert sub.messages[1].payload == first.payload, "the same event, same event_id: de-duplicable"
    await d.drained()
    assert proxy.connections >= 2


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_later_seq_waits_for_an_earlier_one_still_committing(
    database: Any, daemon: Any, subscribe: Any, prefix: str
) -> None:
    """PostgreSQL draws a seq at insert time: the event of a slow transaction must not be overtaken."""
    d = await daemon(mqtt__host="127.0.0.1", mqtt__topic_prefix=prefix, mqtt__poll_interval=0.02)
    sub = await subscribe(f"{prefix}/accounts/#")
    maker, _ = await d.account("maker", "manufacturer")
    alice, _ = await d.account("alice", "subscriber")
    eui = secrets.token_hex(8)
    imported = await d.service.devices.add_device(
        maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4", "app_key": secrets.token_hex(16)}
    )
    await d.drained()
    slow_id = secrets.token_hex(16)
    data = {"net_id": None, "result": "MICFailed", "reason": "MIC mismatch"}
    engine = create_engine(database.url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(events).values(event_id=slow_id, type="join.rejected", account="maker",
                                                     dev_eui=eui, data=json.dumps(data)))  # fmt: skip
            await conn.execute(insert(outbox).values(event_id=slow_id))
            await d.service.claims.claim(alice, bytes.fromhex(eui), imported.owner_token)
            await asyncio.sleep(0.3)  # the slow transaction stays open while the publisher polls many times
        await sub.wait(lambda ms: len(ms) == 3, what="the slow event and the claim")
        arrived = [(m.json["type"], m.json["seq"]) for m in sub.messages[1:]]
        assert [t for t, _ in arrived] == ["join.rejected", "device.claimed"], arrived
        assert arrived[0][1] < arrived[1][1]

        async with engine.connect() as conn:  # a transaction that draws a seq and rolls back leaves a hole
            await conn.execute(insert(events).values(event_id=secrets.token_hex(16), type="join.rejected",
                                                     account="maker", dev_eui=eui, data=json.dumps(data)))  # fmt: skip
            await conn.rollback()
        await d.service.devices.set_net_id(alice, bytes.fromhex(eui), None)
        await sub.wait(lambda ms: len(ms) == 4, what="the event after a hole that never fills")
        assert sub.messages[3].json["seq"] == arrived[1][1] + 2
    finally:
        await engine.dispose()
