"""The broker stopped mid-stream and restarted: no event lost, none reordered for a device.

A stream of ownership changes runs while the test's own Mosquitto is stopped (SIGTERM) and started again.
The integrator holds a persistent session (QoS 1), as docs/events.md advises, so what the broker acknowledged to
the daemon before the stop reaches it after the restart. Repeats are allowed (at least once), gaps and
reordering are not.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from jsd.events.schema import check

JOIN_EUI = "70b3d57ed0000001"
DEVICES = 4
CHANGES = 240


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
async def test_broker_stopped_mid_stream_loses_and_reorders_nothing(
    mosquitto: Any, daemon: Any, subscribe: Any, prefix: str
) -> None:
    """(The broker fixture comes first so that it is torn down last, after the clients.)"""
    d = await daemon(
        mqtt__host="127.0.0.1", mqtt__port=mosquitto.port, mqtt__topic_prefix=prefix,
        mqtt__retry_min=0.05, mqtt__retry_max=0.2, mqtt__poll_interval=0.02,
    )  # fmt: skip
    session = f"integrator-{secrets.token_hex(4)}"
    first = await subscribe(f"{prefix}/accounts/#", port=mosquitto.port, persistent_id=session)
    maker, _ = await d.account("maker", "manufacturer")
    alice, _ = await d.account("alice", "subscriber")
    euis = [secrets.token_bytes(8) for _ in range(DEVICES)]
    for eui in euis:
        imported = await d.service.devices.add_device(
            maker, {"dev_eui": eui.hex(), "join_eui": JOIN_EUI, "mac_version": "1.0.4", "generate_keys": True}
        )
        assert imported.owner_token is not None
        await d.service.claims.claim(alice, eui, imported.owner_token)

    made = 0

    async def stream() -> None:
        nonlocal made
        for i in range(CHANGES):
            net_id = (i % 200 + 1).to_bytes(3, "big")
            await d.service.devices.set_net_id(alice, euis[i % DEVICES], net_id)
            made += 1
            await asyncio.sleep(0.002)

    writer = asyncio.create_task(stream())
    await first.wait(lambda ms: len(ms) >= 40, what="the stream under way")
    mosquitto.stop()
    stopped_at = made
    await d.until(lambda: made >= stopped_at + 40 or writer.done(), what="events written while the broker is away")
    mosquitto.start()
    second = await subscribe(port=mosquitto.port, persistent_id=session)
    await writer
    stored = await d.store.events(account=None, after=None, limit=1000)
    assert len(stored) == 3 * DEVICES + CHANGES
    wanted = {e.event_id for e in stored}
    received = lambda: first.messages + second.messages  # noqa: E731 - both sessions, in arrival order
    await second.wait(
        lambda _: wanted <= {m.json["event_id"] for m in received()}, within=20, what="every event after the restart"
    )
    await d.drained()

    seen: set[str] = set()
    firsts: dict[str, list[int]] = {eui.hex(): [] for eui in euis}
    for message in received():
        event = message.json
        assert check(event) == [], event
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            firsts[event["dev_eui"]].append(event["seq"])
    for eui, seqs in firsts.items():
        expected = sorted(e.seq for e in stored if e.dev_eui == eui)
        assert seqs == expected, f"{eui}: events missing or out of order"
    assert stopped_at < CHANGES, "the broker went away while events were still being written"
