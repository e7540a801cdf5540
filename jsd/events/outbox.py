"""The outbox as the publisher sees it: pending events in seq order, acknowledged once the broker has them.

The rows themselves are written by the registry in the transaction of each change (an ownership change, an
accepted or refused join), so this side only reads, deletes and prunes. Published events stay in the events
table for ``GET /api/v1/events`` until pruning keeps only the newest ``ownership.event_retention``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC

from jsd.events.topics import Topics
from jsd.ownership import event_view
from jsd.registry.ownership import OwnershipStore

__all__ = ["Outbox", "Outgoing"]

log = logging.getLogger("jsd.events")


@dataclass(frozen=True)
class Outgoing:
    """One event ready to publish: where, what, and the id that acknowledges it."""

    event_id: str
    seq: int
    dev_eui: str | None
    topic: str
    payload: bytes


class Outbox:
    """Pending events of the store, rendered for the broker; pruning of published ones on a timer."""

    def __init__(self, store: OwnershipStore, topics: Topics, retention: int, prune_interval: float) -> None:
        self._store = store
        self._topics = topics
        self._retention = retention
        self._prune_interval = prune_interval
        self._pruned_at = float("-inf")

    async def pending(self, limit: int) -> list[Outgoing]:
        """The oldest unacknowledged events, in seq order (so in commit order per device)."""
        out = []
        for stored in await self._store.pending_events(limit):
            view = event_view(stored)
            body = view.as_dict()
            body["time"] = view.time.astimezone(UTC).isoformat().replace("+00:00", "Z")
            payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            topic = self._topics.event(view.account, stored.dev_eui, view.type)
            out.append(Outgoing(stored.event_id, stored.seq, stored.dev_eui, topic, payload))
        return out

    async def acknowledge(self, batch: Sequence[Outgoing]) -> None:
        await self._store.acknowledge([item.event_id for item in batch])

    async def prune_if_due(self) -> int:
        """Drop published events beyond the retention, at most once per interval; how many went."""
        now = time.monotonic()
        if now - self._pruned_at < self._prune_interval:
            return 0
        self._pruned_at = now
        removed = await self._store.prune_events(self._retention)
        if removed:
            log.info("pruned %d published events (keeping the newest %d)", removed, self._retention)
        return removed
