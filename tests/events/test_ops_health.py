"""/readyz and /metrics with a broker that goes away: MQTT reported (not fatal), the outbox depth and age grow."""

from __future__ import annotations

from typing import Any

import aiohttp

from jsd.registry.journal import new_event


async def _get(url: str) -> tuple[int, Any, dict[str, float]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "readyz") as response:
            status, ready = response.status, await response.json()
        async with client.get(url + "metrics") as response:
            text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return status, ready, values


async def test_broker_state_is_reported_not_fatal(daemon: Any, mosquitto: Any, prefix: str) -> None:
    d = await daemon(mqtt__host="127.0.0.1", mqtt__port=mosquitto.port, mqtt__topic_prefix=prefix,
                     mqtt__retry_min=0.1, mqtt__retry_max=0.5)  # fmt: skip

    async def state(expected: str) -> tuple[int, Any, dict[str, float]] | None:
        got = await _get(d.url)
        return got if got[1]["checks"]["mqtt"]["state"] == expected else None

    status, ready, values = await d.until(lambda: state("connected"), what="publisher connected")
    assert status == 200 and ready["checks"]["mqtt"] == {"state": "connected", "fatal": False}
    assert values["jsd_mqtt_connected"] == 1

    mosquitto.stop()
    status, ready, values = await d.until(lambda: state("disconnected"), what="publisher disconnected")
    assert status == 200 and ready["status"] == "ready"  # events wait in the outbox; joins go on
    assert values["jsd_mqtt_connected"] == 0
    await d.store.record(events_=[new_event("device.claimed", "acme", "0102030405060708", {"join_eui": "00" * 8})])

    async def waiting() -> dict[str, float] | None:
        values = (await _get(d.url))[2]
        return values if values["jsd_outbox_events"] >= 1 and values["jsd_outbox_oldest_age_seconds"] > 0 else None

    await d.until(waiting, what="a waiting event in /metrics")
    mosquitto.start()
    await d.drained(within=20)
    values = (await _get(d.url))[2]
    assert values["jsd_outbox_events"] == 0 and values["jsd_outbox_oldest_age_seconds"] == 0
