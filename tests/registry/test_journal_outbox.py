"""The outbox without a broker: `Journal.drop_pending` clears outbox rows without touching their events."""

from __future__ import annotations

from typing import Any

from jsd.registry import migrate
from jsd.registry.journal import Journal, new_event


async def test_drop_pending_clears_at_most_the_limit_and_keeps_the_events(database: Any) -> None:
    engine = database.engine()
    await migrate(engine)
    journal = Journal(engine)
    made = [new_event("device.netid_set", "alice", f"{i:016x}", {"n": i}) for i in range(5)]
    await journal.record(events_=made)

    assert await journal.drop_pending(3) == 3
    assert len(await journal.pending_events(10)) == 2
    assert await journal.drop_pending(10) == 2
    assert await journal.pending_events(10) == []
    assert await journal.drop_pending(10) == 0
    kept = await journal.events(account=None, after=None, limit=10)
    assert sorted(e.event_id for e in kept) == sorted(e.event_id for e in made)
