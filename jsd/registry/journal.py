"""The journal: audit entries, events with their outbox rows, and stored command replies.

Every state change of the ownership stores is written together with its audit entries and events in one
transaction (`write_records` inside the change's own transaction), so a crash never leaves a change without
its record or a record without its change. The join service and `jsd.events` need only this store.
`JournalledStore` is the base of every store that writes such records.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

from sqlalchemy import Delete, Insert, Update, delete, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jsd.registry.engine import read_only, writes_first
from jsd.registry.lease import Lease, lease_for
from jsd.registry.tables import audit_log, command_replies, events, outbox

__all__ = [
    "UNOWNED",
    "AuditEntry",
    "AuditRecord",
    "EventRecord",
    "Journal",
    "JournalledStore",
    "StoredEvent",
    "audit_row",
    "new_event",
    "utc",
    "write_records",
]

UNOWNED = "_unowned"
"""The account of events about devices that have none (added by an operator outside the claim workflow)."""


@dataclass(frozen=True)
class AuditRecord:
    """One audit entry to write: never key material or tokens in `details`."""

    account: str | None
    key_id: str | None
    source: str
    action: str
    dev_eui: str | None = None
    owner_account: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """An entry of the audit log as read back; `jsd.ownership` shows it as it is."""

    id: int
    at: datetime
    account: str | None
    key_id: str | None
    source: str
    action: str
    dev_eui: bytes | None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    """One event to write with its outbox row; `data` never carries key material or tokens."""

    event_id: str
    type: str
    account: str
    dev_eui: str | None
    data: Mapping[str, Any]


def new_event(type_: str, account: str | None, dev_eui: str | None, data: Mapping[str, Any]) -> EventRecord:
    """An event with a fresh id (the subscribers' de-duplication key) for the device's account."""
    return EventRecord(secrets.token_hex(16), type_, account or UNOWNED, dev_eui, data)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event_id: str
    type: str
    account: str
    dev_eui: str | None
    time: datetime
    data: dict[str, Any]


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: datetime | None) -> datetime | None: ...
def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def audit_row(a: AuditRecord) -> dict[str, Any]:
    """The audit_log columns of an entry but its `dev_eui` (an import fills that in per device)."""
    return {
        "account": a.account,
        "key_id": a.key_id,
        "source": a.source[:128],
        "action": a.action,
        "owner_account": a.owner_account,
        "details": json.dumps(dict(a.details), sort_keys=True),
    }


async def write_records(
    conn: AsyncConnection, audits: Iterable[AuditRecord] = (), events_: Iterable[EventRecord] = ()
) -> None:
    """Audit entries and events (with their outbox rows) inside the caller's transaction."""
    audit_rows = [{**audit_row(a), "dev_eui": a.dev_eui} for a in audits]
    if audit_rows:
        await conn.execute(insert(audit_log), audit_rows)
    event_rows = [
        {
            "event_id": e.event_id,
            "type": e.type,
            "account": e.account,
            "dev_eui": e.dev_eui,
            "data": json.dumps(dict(e.data), sort_keys=True),
        }
        for e in events_
    ]
    if event_rows:
        await conn.execute(insert(events), event_rows)
        await conn.execute(insert(outbox), [{"event_id": r["event_id"]} for r in event_rows])


class JournalledStore:
    """SQL on the registry's engine (SQLite or PostgreSQL) whose changes are journalled with their records."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writes_first(engine)
        self._reader = read_only(engine)

    async def _one_row(
        self,
        statement: Update | Delete,
        audits: Iterable[AuditRecord] = (),
        events_: Iterable[EventRecord] = (),
        then: Insert | None = None,
    ) -> bool:
        """Change exactly one row and journal it (and run `then`) in one transaction; False if none matched."""
        async with self._writer.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return False
            if then is not None:
                await conn.execute(then)
            await write_records(conn, audits, events_)
            return True

    async def _insert(self, statement: Insert, audits: Iterable[AuditRecord] = ()) -> bool:
        """Insert and journal in one transaction; False if a unique constraint refused the row."""
        try:
            async with self._writer.begin() as conn:
                await conn.execute(statement)
                await write_records(conn, audits)
        except IntegrityError:
            return False
        return True


class Journal(JournalledStore):
    """Audit log, events and their outbox, command replies; the publisher's lease."""

    def lease(self, name: str) -> Lease:
        """The lease `name` among all instances on this database (see `jsd.registry.lease`)."""
        return lease_for(self._engine, name)

    async def record(self, audits: Iterable[AuditRecord] = (), events_: Iterable[EventRecord] = ()) -> None:
        """Audit entries and events that go with no other change (a refused join, an AppSKeyReq)."""
        async with self._writer.begin() as conn:
            await write_records(conn, audits, events_)

    # -- audit log and events -----------------------------------------------------------------------

    async def audit(
        self, *, account: str | None, dev_eui: str | None, after: int | None, limit: int, newest_first: bool = False
    ) -> list[AuditEntry]:
        """Entries in id order; with `account`, only those it made or that concern its devices."""
        statement = select(audit_log).order_by(audit_log.c.id.desc() if newest_first else audit_log.c.id).limit(limit)
        if account is not None:
            statement = statement.where(or_(audit_log.c.account == account, audit_log.c.owner_account == account))
        if dev_eui is not None:
            statement = statement.where(audit_log.c.dev_eui == dev_eui)
        if after is not None:
            statement = statement.where(audit_log.c.id > after)
        async with self._reader.connect() as conn:
            return [
                AuditEntry(
                    r.id, utc(r.at), r.account, r.key_id, r.source, r.action,
                    None if r.dev_eui is None else bytes.fromhex(r.dev_eui), json.loads(r.details),
                )  # fmt: skip
                for r in await conn.execute(statement)
            ]

    async def events(
        self,
        *,
        account: str | None,
        after: int | None,
        limit: int,
        dev_eui: str | None = None,
        type_: str | None = None,
        types: Sequence[str] | None = None,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        """Events in seq order (`newest_first`: the last `limit` ones, newest first); `types`: any of these."""
        order = events.c.seq.desc() if newest_first else events.c.seq
        statement = select(events).order_by(order).limit(limit)
        if types is not None:
            statement = statement.where(events.c.type.in_(list(types)))
        if account is not None:
            statement = statement.where(events.c.account == account)
        if after is not None:
            statement = statement.where(events.c.seq > after)
        if dev_eui is not None:
            statement = statement.where(events.c.dev_eui == dev_eui)
        if type_ is not None:
            statement = statement.where(events.c.type == type_)
        async with self._reader.connect() as conn:
            return [_event(r) for r in await conn.execute(statement)]

    async def pending_events(self, limit: int) -> list[StoredEvent]:
        """The oldest events not yet acknowledged by the broker, in order."""
        statement = (
            select(events)
            .join(outbox, outbox.c.event_id == events.c.event_id)
            .order_by(events.c.seq)
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            return [_event(r) for r in await conn.execute(statement)]

    async def acknowledge(self, event_ids: Sequence[str]) -> None:
        """The broker has these events: drop their outbox rows (the events stay for REST until pruned)."""
        if event_ids:
            async with self._writer.begin() as conn:
                await conn.execute(delete(outbox).where(outbox.c.event_id.in_(list(event_ids))))

    async def prune_events(self, keep: int) -> int:
        """Keep the newest `keep` events (counted, so gaps in seq do not matter); unpublished ones stay too."""
        async with self._writer.begin() as conn:
            pending = events.c.event_id.not_in(select(outbox.c.event_id))
            if keep <= 0:
                return int((await conn.execute(delete(events).where(pending))).rowcount)
            oldest_kept = (
                await conn.execute(select(events.c.seq).order_by(events.c.seq.desc()).offset(keep - 1).limit(1))
            ).scalar()
            if oldest_kept is None:
                return 0
            result = await conn.execute(delete(events).where(events.c.seq < oldest_kept, pending))
            return int(result.rowcount)

    # -- command replies (idempotency) --------------------------------------------------------------

    async def reply(self, account: str, request_id: str) -> dict[str, Any] | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(command_replies.c.reply).where(
                        command_replies.c.account == account, command_replies.c.request_id == request_id
                    )
                )
            ).first()
        return None if row is None else dict(json.loads(row.reply))

    async def prune_replies(self, older_than: datetime) -> int:
        """Forget stored command replies older than this: a client retries within minutes, not weeks."""
        async with self._writer.begin() as conn:
            result = await conn.execute(delete(command_replies).where(command_replies.c.created_at < older_than))
            return int(result.rowcount)

    async def store_reply(self, account: str, request_id: str, reply: Mapping[str, Any]) -> None:
        """Keep a successful reply; a concurrent retry that stored it first wins (same content)."""
        values = {"account": account, "request_id": request_id, "reply": json.dumps(dict(reply))}
        await self._insert(insert(command_replies).values(values))


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        row.seq, row.event_id, row.type, row.account, row.dev_eui, utc(row.time), json.loads(row.data)
    )
