"""Events out and commands in over MQTT (docs/events.md, docs/api.md).

`running(...)` is what the composition root starts in exactly one process: with a broker configured, the
publisher (outbox → broker, command topics → ownership service → replies); without one, the keeper that
clears the outbox and prunes published events down to ``ownership.event_retention``, so the events stay
queryable over ``GET /api/v1/events`` with bounded storage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from jsd.config import Settings
from jsd.events.commands import CommandHandler
from jsd.events.outbox import Outbox
from jsd.events.publisher import MqttConfig, Publisher, keep_without_broker
from jsd.events.topics import Topics
from jsd.ownership import OwnershipService
from jsd.registry.ownership import OwnershipStore

__all__ = ["Publisher", "Topics", "running"]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, service: OwnershipService, store: OwnershipStore
) -> AsyncIterator[Publisher | None]:
    """Run the publisher (or, without a broker, the retention keeper) until the context ends."""
    topics = Topics(settings.get("mqtt", "topic_prefix"))
    outbox = Outbox(
        store, topics, settings.get("ownership", "event_retention"), settings.get("ownership", "event_prune_interval")
    )
    config = MqttConfig.from_settings(settings)
    publisher = None
    if config is None:
        task = asyncio.create_task(keep_without_broker(outbox, settings.get("mqtt", "poll_interval")))
    else:
        publisher = Publisher(config, topics, outbox, CommandHandler(service, topics))
        task = asyncio.create_task(publisher.run(), name="jsd-events")
    try:
        yield publisher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
