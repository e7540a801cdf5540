"""Outbox rows live until the broker's PUBACK; an unacknowledged event is published again (same event_id).

A relay between the daemon and the shared broker holds back the broker's answers: the integrator already has
the event, the daemon has no PUBACK yet, so the event must still be in the outbox. Cutting the connection
then makes the daemon reconnect and publish it again: a repeat the integrator drops by `event_id`.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest

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
    await d.service.add_device(maker, {"dev_eui": eui, "join_eui": JOIN_EUI, "mac_version": "1.0.4",
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
