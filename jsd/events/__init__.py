"""Events out and commands in over MQTT (docs/events.md, docs/api.md).

`running(...)` is what the composition root starts in exactly one process: with a broker configured, the
publisher (outbox → broker, command topics → ownership service → replies); without one, the keeper that
clears the outbox and prunes published events down to ``ownership.event_retention``, so the events stay
queryable over ``GET /api/v1/events`` with bounded storage.

Several instances on one database: only the holder of the "events" lease (`jsd.registry.lease`) works; the
others try to take it every ``mqtt.failover_interval`` seconds and take over when the holder dies. The holder
checks the lease as often and stops at once when it lost it (its database session ended), so two instances
publish side by side at most for that interval. What a dying holder had sent but not yet acknowledged is sent
again by the next one: delivery stays at least once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from jsd.config import Settings
from jsd.events.commands import CommandHandler
from jsd.events.outbox import Outbox
from jsd.events.publisher import MqttConfig, Publisher, keep_without_broker
from jsd.events.topics import Topics
from jsd.ownership import Ownership
from jsd.registry.journal import Journal
from jsd.registry.lease import Lease

__all__ = ["Publisher", "Topics", "running"]

log = logging.getLogger("jsd.events")

LEASE = "events"
RECANCEL = 3.0
"""Seconds between cancellations of a publisher that has not ended (see `stop`); above the 2 s it may take
to tell the broker it goes offline."""


@contextlib.asynccontextmanager
async def running(
    settings: Settings, service: Ownership, store: Journal
) -> AsyncIterator[Publisher | None]:
    """Run the publisher (or, without a broker, the retention keeper) until the context ends."""
    topics = Topics(settings.get("mqtt", "topic_prefix"))
    outbox = Outbox(
        store, topics, settings.get("ownership", "event_retention"), settings.get("ownership", "event_prune_interval")
    )
    config = MqttConfig.from_settings(settings)
    publisher = None
    work: Callable[[], Coroutine[Any, Any, None]]
    if config is None:
        poll = settings.get("mqtt", "poll_interval")

        def work() -> Coroutine[Any, Any, None]:
            return keep_without_broker(outbox, poll)
    else:
        publisher = Publisher(config, topics, outbox, CommandHandler(service, topics))
        work = publisher.run
    task = asyncio.create_task(
        lead(store.lease(LEASE), work, settings.get("mqtt", "failover_interval")), name="jsd-events"
    )
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def lead(lease: Lease, work: Callable[[], Coroutine[Any, Any, None]], interval: float) -> None:
    """Run `work` while holding `lease`; without it, try again every `interval` seconds. Until cancelled."""
    standing_by = failing = False
    while True:
        try:
            got = await lease.acquire()
            failing = False
        except Exception as exc:  # noqa: BLE001 - the database may be away for a while; keep trying
            if not failing:  # once per outage, not every interval
                log.warning("events: cannot take the publisher lease: %s; retrying", type(exc).__name__)
            got, failing = False, True
        if not got:
            if not standing_by and not failing:
                log.info("events: another instance publishes; standing by")
                standing_by = True
            await asyncio.sleep(interval)
            continue
        standing_by = False
        log.info("events: this instance publishes")
        task = asyncio.create_task(work())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=interval)
                if not task.done() and not await lease.held():
                    log.warning("events: the publisher lease was lost; stopping")
                    break
        finally:
            try:
                ended = await stop(task)
            finally:
                await lease.release()
        if isinstance(ended, Exception):
            log.error("events: the publisher stopped: %s", type(ended).__name__)
        await asyncio.sleep(interval)  # never a busy loop; meanwhile another instance may take over


async def stop(task: asyncio.Task[None]) -> BaseException | None:
    """Cancel `task` and wait for its end, cancelling it again every `RECANCEL` seconds; what it raised.

    On Python 3.11, ``asyncio.wait_for`` returns the result of a call that completes in the same loop turn as
    the cancellation, and the cancellation is lost (fixed in 3.12). aiomqtt awaits every broker call through
    it, so a publisher cancelled as a PUBACK came in would go on serving, and the daemon's stop would wait for
    it forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL)
    return None if task.cancelled() else task.exception()
