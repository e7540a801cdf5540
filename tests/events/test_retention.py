"""Without a broker the events stay queryable over REST with bounded retention; unpublished ones are kept.

No broker: the daemon clears the outbox (nobody to deliver to) and prunes down to
``ownership.event_retention``. A broker that is configured but away: nothing is pruned or dropped, the
events wait in the outbox.
"""

from __future__ import annotations

import logging
import secrets
import socket
from typing import Any

import aiohttp
import pytest

JOIN_EUI = "70b3d57ed0000001"


async def _changes(d: Any, count: int) -> None:
    """`count` events: two pre-commissionings, two claims, then NetID changes."""
    maker, _ = await d.account("maker", "manufacturer")
    alice, _ = await d.account("alice", "subscriber")
    euis = [secrets.token_bytes(8) for _ in range(2)]
    for eui in euis:
        imported = await d.service.devices.add_device(
            maker, {"dev_eui": eui.hex(), "join_eui": JOIN_EUI, "mac_version": "1.0.4", "app_key": "00" * 16}
        )
        await d.service.claims.claim(alice, eui, imported.owner_token)
    for i in range(count - 4):
        await d.service.devices.set_net_id(alice, euis[i % 2], (i + 1).to_bytes(3, "big"))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_no_broker_keeps_the_newest_events_for_rest(daemon: Any) -> None:
    d = await daemon(ownership__event_retention=5, ownership__event_prune_interval=0.1)
    _, operator_key = await d.account("ops", "operator")
    await _changes(d, 12)

    async def pruned() -> bool:
        return len(await d.store.events(account=None, after=None, limit=100)) == 5

    await d.until(pruned, what="pruning down to the retention")
    await d.drained()
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{d.url}api/v1/events?limit=100", headers={"Authorization": f"Bearer {operator_key}"}) as response,
    ):
        assert response.status == 200
        listed = (await response.json())["events"]
    assert [e["seq"] for e in listed] == list(range(8, 13)), "the newest five, in order"
    assert [e["type"] for e in listed] == ["device.netid_set"] * 5


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_a_broker_away_keeps_every_event_in_the_outbox(daemon: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "jsd.events")
    closed = socket.socket()  # bound, never listening: connections are refused
    closed.bind(("127.0.0.1", 0))
    try:
        d = await daemon(mqtt__host="127.0.0.1", mqtt__port=closed.getsockname()[1], mqtt__retry_min=0.05,
                         mqtt__retry_max=0.1, ownership__event_retention=2, ownership__event_prune_interval=0.05)  # fmt: skip
        await _changes(d, 6)
        await d.until(lambda: sum("retrying" in r.getMessage() for r in caplog.records) >= 3, what="retries")
    finally:
        closed.close()
    assert len(await d.store.pending_events(100)) == 6
    assert len(await d.store.events(account=None, after=None, limit=100)) == 6


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_with_a_broker_published_events_are_pruned_to_the_retention(daemon: Any, prefix: str) -> None:
    d = await daemon(mqtt__host="127.0.0.1", mqtt__topic_prefix=prefix, mqtt__poll_interval=0.02,
                     ownership__event_retention=3, ownership__event_prune_interval=0.05)  # fmt: skip
    await _changes(d, 10)
    await d.drained()

    async def pruned() -> bool:
        return [e.seq for e in await d.store.events(account=None, after=None, limit=100)] == [8, 9, 10]

    await d.until(pruned, what="pruning of published events")
