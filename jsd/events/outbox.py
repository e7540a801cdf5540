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
from datetime import UTC, datetime, timedelta

from jsd.events.topics import Topics
from jsd.ownership.journal import event_view
from jsd.registry.journal import Journal

__all__ = ["Outbox", "Outgoing"]

log = logging.getLogger("jsd.events")

REPLY_RETENTION = timedelta(days=7)
"""Stored command replies (idempotency) are kept this long: retries come within minutes."""


@dataclass(frozen=True)
class Outgoing:
    """One event ready to publish: where, what, and the id that acknowledges it."""

    event_id: str
    seq: int
    dev_eui: str | None
    topic: str
    payload: bytes


class Outbox:
    """Pending events of the store, rendered for the broker, in seq order; pruning of published ones on a timer.

    On PostgreSQL a seq is drawn when the event row is inserted, not when its transaction commits, so a later
    seq can become visible first: a refused join's event (written on its own) could overtake a change of the
    same device that is still committing. A hole in the seqs therefore holds back what follows it for up to
    `hole_grace` seconds; a hole still open after that is a rolled-back transaction's, and is passed. SQLite
    assigns seqs in commit order, so it never waits.
    """

    def __init__(
        self, store: Journal, topics: Topics, retention: int, prune_interval: float, hole_grace: float = 2.0
    ) -> None:
        self._store = store
        self._topics = topics
        self._retention = retention
        self._prune_interval = prune_interval
        self._pruned_at = float("-inf")
        self._hole_grace = hole_grace
        self._next_seq: int | None = None
        self._hole: tuple[int, float] | None = None

    async def pending(self, limit: int) -> list[Outgoing]:
        """The oldest unacknowledged events in seq order, up to a hole in the seqs that may still fill."""
        out = []
        expected = self._next_seq
        for stored in await self._store.pending_events(limit):
            if expected is not None and stored.seq > expected and self._hole_open(expected):
                break
            if expected is not None and stored.seq < expected:
                log.info("event %d committed after later ones were published", stored.seq)
            expected = max(expected or 0, stored.seq + 1)
            view = event_view(stored)
            body = view.as_dict()
            payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            topic = self._topics.event(view.account, stored.dev_eui, view.type)
            out.append(Outgoing(stored.event_id, stored.seq, stored.dev_eui, topic, payload))
        else:
            self._hole = None
        return out

    def _hole_open(self, seq: int) -> bool:
        """True while the hole starting at `seq` is younger than the grace period."""
        now = time.monotonic()
        if self._hole is None or self._hole[0] != seq:
            self._hole = (seq, now)
        return now - self._hole[1] < self._hole_grace

    async def acknowledge(self, batch: Sequence[Outgoing]) -> None:
        await self._store.acknowledge([item.event_id for item in batch])
        if batch:
            self._next_seq = max(self._next_seq or 0, max(item.seq for item in batch) + 1)

    async def prune_if_due(self) -> int:
        """Drop published events beyond the retention, at most once per interval; how many went."""
        now = time.monotonic()
        if now - self._pruned_at < self._prune_interval:
            return 0
        self._pruned_at = now
        removed = await self._store.prune_events(self._retention)
        replies = await self._store.prune_replies(datetime.now(UTC) - REPLY_RETENTION)
        if replies:
            log.info("forgot %d command replies older than %s", replies, REPLY_RETENTION)
        if removed:
            log.info("pruned %d published events (keeping the newest %d)", removed, self._retention)
        return removed
