"""Persistence of the ownership workflow: accounts, API keys, claim state, ASTKs, audit log, events.

Every state change is written together with its audit entries and its events (and their outbox rows) in one
transaction, so a crash never leaves a change without its record or a record without its change. Rules
(who may do what, what a token is worth) live in `jsd.ownership`; this module only stores and fetches.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jsd.registry.engine import read_only, writes_first
from jsd.registry.errors import DeviceExists, RegistryError
from jsd.registry.lease import Lease, lease_for
from jsd.registry.ratelimits import count_failures, failure_counts
from jsd.registry.tables import (
    accounts,
    api_keys,
    astks,
    audit_log,
    command_replies,
    device_nonces,
    devices,
    events,
    fresh_nonces_row,
    import_rows,
    outbox,
    roaming_agreements,
    spent_owner_tokens,
)

__all__ = [
    "AccountExists",
    "AccountRecord",
    "ApiKeyRecord",
    "AstkExists",
    "AstkRecord",
    "AuditRecord",
    "EventRecord",
    "OwnedDevice",
    "OwnershipStore",
    "StoredAudit",
    "StoredEvent",
    "new_event",
]

UNOWNED = "_unowned"
"""The account of events about devices that have none (added by an operator outside the claim workflow)."""


class AccountExists(RegistryError):
    """An account with this id exists already."""


class AstkExists(RegistryError):
    """This account already has an ASTK of that name."""


@dataclass(frozen=True)
class AccountRecord:
    id: str
    kind: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    account: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    account_kind: str | None = None


@dataclass(frozen=True)
class AstkRecord:
    label: str
    account: str
    name: str
    origin: str
    exported: bool
    created_at: datetime


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
class StoredAudit:
    id: int
    at: datetime
    account: str | None
    key_id: str | None
    source: str
    action: str
    dev_eui: str | None
    details: dict[str, Any]


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


@dataclass(frozen=True)
class OwnedDevice:
    """A device as the ownership workflow sees it (no nonce state, no key blobs)."""

    dev_eui: str
    join_eui: str
    mac_version: str
    hsm_group: str
    name: str | None
    admin_info: str | None
    secure_element: bool
    profile_id: str
    serial: str | None
    manufacturer: str | None
    owner_account: str | None
    owner_token_hash: str | None
    home_net_id: str | None
    astk_label: str | None
    astk_name: str | None
    keys_exported: bool
    import_digest: str | None
    created_at: datetime
    claimed_at: datetime | None


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    out = utc(value)
    assert out is not None
    return out


_OWNED_COLUMNS = (
    devices.c.dev_eui,
    devices.c.join_eui,
    devices.c.mac_version,
    devices.c.hsm_group,
    devices.c.name,
    devices.c.admin_info,
    devices.c.secure_element,
    devices.c.profile_id,
    devices.c.serial,
    devices.c.manufacturer,
    devices.c.owner_account,
    devices.c.owner_token_hash,
    devices.c.home_net_id,
    devices.c.astk_label,
    astks.c.name,
    devices.c.keys_exported,
    devices.c.import_digest,
    devices.c.created_at,
    devices.c.claimed_at,
)
_SELECT_OWNED = select(*_OWNED_COLUMNS).select_from(
    devices.outerjoin(astks, astks.c.label == devices.c.astk_label)
)


_SPENT = select(spent_owner_tokens.c.token_hash).where(spent_owner_tokens.c.token_hash == bindparam("p_hash"))
_HELD = select(devices.c.dev_eui).where(devices.c.owner_token_hash == bindparam("p_hash"))


def _owned(row: Sequence[Any]) -> OwnedDevice:
    values = list(row)
    values[6] = bool(values[6])
    values[15] = bool(values[15])
    values[17] = _utc(values[17])
    values[18] = utc(values[18])
    return OwnedDevice(*values)


class OwnershipStore:
    """SQL for the ownership workflow on the registry's engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writes_first(engine)
        self._reader = read_only(engine)

    def lease(self, name: str) -> Lease:
        """The lease `name` among all instances on this database (see `jsd.registry.lease`)."""
        return lease_for(self._engine, name)

    # -- records written with every change ------------------------------------------------------------

    @staticmethod
    async def _record(
        conn: AsyncConnection, audits: Iterable[AuditRecord] = (), events_: Iterable[EventRecord] = ()
    ) -> None:
        audit_rows = [
            {
                "account": a.account,
                "key_id": a.key_id,
                "source": a.source[:128],
                "action": a.action,
                "dev_eui": a.dev_eui,
                "owner_account": a.owner_account,
                "details": json.dumps(dict(a.details), sort_keys=True),
            }
            for a in audits
        ]
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

    async def record(self, audits: Iterable[AuditRecord] = (), events_: Iterable[EventRecord] = ()) -> None:
        """Audit entries and events that go with no other change (a refused join, an AppSKeyReq)."""
        async with self._writer.begin() as conn:
            await self._record(conn, audits, events_)

    # -- accounts and API keys ------------------------------------------------------------------------

    async def create_account(
        self, account_id: str, kind: str, name: str, key: ApiKeyRecord, audit: AuditRecord
    ) -> None:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(insert(accounts), {"id": account_id, "kind": kind, "name": name})
                await conn.execute(insert(api_keys), _key_row(key))
                await self._record(conn, [audit])
        except IntegrityError as exc:
            raise AccountExists(f"account {account_id!r} exists already") from exc

    async def get_account(self, account_id: str) -> AccountRecord | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
        return None if row is None else AccountRecord(row.id, row.kind, row.name, _utc(row.created_at))

    async def list_accounts(self) -> list[AccountRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(accounts).order_by(accounts.c.id))
            return [AccountRecord(r.id, r.kind, r.name, _utc(r.created_at)) for r in rows]

    async def add_api_key(self, key: ApiKeyRecord, audit: AuditRecord) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(insert(api_keys), _key_row(key))
            await self._record(conn, [audit])

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with its account's kind, revoked or not (the caller decides)."""
        statement = select(api_keys, accounts.c.kind).join(accounts, accounts.c.id == api_keys.c.account)
        async with self._reader.connect() as conn:
            row = (await conn.execute(statement.where(api_keys.c.key_id == key_id))).first()
        return None if row is None else _key_record(row, row.kind)

    async def list_api_keys(self, account: str) -> list[ApiKeyRecord]:
        statement = select(api_keys).where(api_keys.c.account == account).order_by(api_keys.c.created_at)
        async with self._reader.connect() as conn:
            return [_key_record(row, None) for row in await conn.execute(statement)]

    async def revoke_api_key(self, key_id: str, audit: AuditRecord) -> bool:
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            if result.rowcount != 1:
                return False
            await self._record(conn, [audit])
            return True

    # -- devices ------------------------------------------------------------------------------------

    async def device(self, dev_eui: str) -> OwnedDevice | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(_SELECT_OWNED.where(devices.c.dev_eui == dev_eui))).first()
        return None if row is None else _owned(row)

    async def list_devices(
        self,
        *,
        owner: str | None,
        manufacturer: str | None,
        limit: int,
        after: str | None,
        search: str | None = None,
        state: str | None = None,
    ) -> list[OwnedDevice]:
        """A page in DevEUI order: all devices, or those owned by `owner`, or unclaimed ones of `manufacturer`.

        `search`: a DevEUI prefix (lowercase hex) or a name prefix, as index ranges (fast at any size);
        `state`: claimed, unclaimed, no_net_id (claimed, no home NetID) or net_id_set.
        """
        statement = _SELECT_OWNED
        if owner is not None:
            statement = statement.where(devices.c.owner_account == owner)
        if manufacturer is not None:
            statement = statement.where(devices.c.manufacturer == manufacturer, devices.c.owner_account.is_(None))
        if after is not None:
            statement = statement.where(devices.c.dev_eui > after)
        if state == "claimed":
            statement = statement.where(devices.c.owner_account.is_not(None))
        elif state == "unclaimed":
            statement = statement.where(devices.c.owner_account.is_(None))
        elif state == "no_net_id":
            statement = statement.where(devices.c.owner_account.is_not(None), devices.c.home_net_id.is_(None))
        elif state == "net_id_set":
            statement = statement.where(devices.c.home_net_id.is_not(None))
        statements = [statement]
        if search:
            # Two index ranges queried apart and merged: an OR of them would make the planner scan the owner.
            statements = [statement.where(devices.c.name >= search, devices.c.name < search + "\U0010ffff")]
            hex_prefix = search.lower()
            if len(hex_prefix) <= 16 and all(c in "0123456789abcdef" for c in hex_prefix):
                eui_range = (devices.c.dev_eui >= hex_prefix, devices.c.dev_eui < hex_prefix + "g")
                statements.append(statement.where(*eui_range))
        found: dict[str, OwnedDevice] = {}
        async with self._reader.connect() as conn:
            for each in statements:
                for row in await conn.execute(each.order_by(devices.c.dev_eui).limit(limit)):
                    device = _owned(row)
                    found[device.dev_eui] = device
        return [found[eui] for eui in sorted(found)][:limit]

    async def token_spent(self, token_hash: str) -> bool:
        """True if a claim ever used this token."""
        async with self._reader.connect() as conn:
            return (await conn.execute(_SPENT, {"p_hash": token_hash})).first() is not None

    async def token_in_use(self, token_hash: str) -> bool:
        """True if the token was ever spent or belongs to a device now: a token never works twice."""
        async with self._reader.connect() as conn:
            for statement in (_SPENT, _HELD):
                if (await conn.execute(statement, {"p_hash": token_hash})).first() is not None:
                    return True
            return False

    async def existing(self, dev_euis: Sequence[str]) -> dict[str, tuple[str | None, str | None]]:
        """(manufacturer, import digest) of the devices among `dev_euis` that exist already."""
        if not dev_euis:
            return {}
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(devices.c.dev_eui, devices.c.manufacturer, devices.c.import_digest).where(
                    devices.c.dev_eui.in_(list(dev_euis))
                )
            )
            return {r.dev_eui: (r.manufacturer, r.import_digest) for r in rows}

    async def add_device(self, row: Mapping[str, Any], audit: AuditRecord, events_: Iterable[EventRecord]) -> None:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(insert(devices), dict(row))
                await conn.execute(insert(device_nonces), fresh_nonces_row(row["dev_eui"]))
                await self._record(conn, [audit], events_)
        except IntegrityError as exc:
            raise DeviceExists(f"device {row['dev_eui']} exists already, or its owner token is taken") from exc

    async def stage(self, batch_id: str, rows: Sequence[tuple[int, str, Mapping[str, Any]]]) -> None:
        """Park prepared rows of a bulk import (wrapped keys only) until the whole file has been checked."""
        async with self._writer.begin() as conn:
            await conn.execute(
                insert(import_rows),
                [
                    {"batch_id": batch_id, "line": line, "dev_eui": eui, "row": json.dumps(dict(row)).encode()}
                    for line, eui, row in rows
                ],
            )

    async def staged(self, batch_id: str) -> int:
        """How many rows of a bulk import are staged so far (0 once it is committed or dropped)."""
        async with self._reader.connect() as conn:
            count = await conn.execute(
                select(func.count()).select_from(import_rows).where(import_rows.c.batch_id == batch_id)
            )
            return int(count.scalar() or 0)

    async def drop_batch(self, batch_id: str) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(delete(import_rows).where(import_rows.c.batch_id == batch_id))

    async def commit_batch(
        self,
        batch_id: str,
        audit: AuditRecord,
        events_of: Any,
        device_audit: AuditRecord | None = None,
        chunk: int = 2_000,
    ) -> None:
        """Move a checked batch into `devices` in one transaction: all rows or none.

        `events_of(row)` returns the events for one staged device row. `device_audit` is the entry every device
        of the batch gets (its `dev_eui` filled in): written by one INSERT ... SELECT over the staged rows in the
        same transaction, so a 100,000-device import costs one statement, not 100,000 Python rows.
        """
        try:
            async with self._writer.begin() as conn:
                last = -1
                while True:
                    staged = (
                        await conn.execute(
                            select(import_rows.c.line, import_rows.c.row)
                            .where(import_rows.c.batch_id == batch_id, import_rows.c.line > last)
                            .order_by(import_rows.c.line)
                            .limit(chunk)
                        )
                    ).all()
                    if not staged:
                        break
                    last = staged[-1].line
                    rows = [_revive(json.loads(r.row)) for r in staged]
                    await conn.execute(insert(devices), rows)
                    await conn.execute(insert(device_nonces), [fresh_nonces_row(r["dev_eui"]) for r in rows])
                    await self._record(conn, (), [e for r in rows for e in events_of(r)])
                if device_audit is not None:
                    await conn.execute(_per_device_audit(batch_id, device_audit))
                await self._record(conn, [audit])
                await conn.execute(delete(import_rows).where(import_rows.c.batch_id == batch_id))
        except IntegrityError as exc:
            raise DeviceExists("a device of the batch exists already, or an owner token is taken") from exc

    async def claim(
        self, dev_eui: str, token_hash: str, account: str, audit: AuditRecord, events_: Iterable[EventRecord]
    ) -> bool:
        """Hand an unclaimed device to `account` if `token_hash` is still its token; the token is spent."""
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(devices)
                .where(
                    devices.c.dev_eui == dev_eui,
                    devices.c.owner_token_hash == token_hash,
                    devices.c.owner_account.is_(None),
                )
                .values(
                    owner_account=account,
                    owner_token_hash=None,
                    claimed_at=datetime.now(UTC),
                    home_net_id=None,
                    astk_label=None,
                    updated_at=func.now(),
                )
            )
            if result.rowcount != 1:
                return False
            await conn.execute(insert(spent_owner_tokens), {"token_hash": token_hash})
            await self._record(conn, [audit], events_)
            return True

    async def replace_token(self, dev_eui: str, old_hash: str, new_hash: str, audit: AuditRecord) -> bool:
        """Give an unclaimed device a new owner token; the old one is spent (it may be on a lost label)."""
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(devices)
                .where(
                    devices.c.dev_eui == dev_eui,
                    devices.c.owner_token_hash == old_hash,
                    devices.c.owner_account.is_(None),
                )
                .values(owner_token_hash=new_hash, updated_at=func.now())
            )
            if result.rowcount != 1:
                return False
            await conn.execute(insert(spent_owner_tokens), {"token_hash": old_hash})
            await self._record(conn, [audit])
            return True

    async def update_owned(
        self,
        dev_eui: str,
        owner: str | None,
        values: Mapping[str, Any],
        audit: AuditRecord,
        events_: Iterable[EventRecord],
    ) -> bool:
        """Change a device still owned by `owner` (None = any owner: operator); False if it is not."""
        condition = devices.c.dev_eui == dev_eui
        if owner is not None:
            condition = and_(condition, devices.c.owner_account == owner)
        async with self._writer.begin() as conn:
            result = await conn.execute(update(devices).where(condition).values(**values, updated_at=func.now()))
            if result.rowcount != 1:
                return False
            await self._record(conn, [audit], events_)
            return True

    async def reset_nonces(self, dev_eui: str, audit: AuditRecord) -> bool:
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(device_nonces)
                .where(device_nonces.c.dev_eui == dev_eui)
                .values(
                    version=device_nonces.c.version + 1,
                    last_dev_nonce=None,
                    used_dev_nonces=b"",
                    rj_count0=None,
                    rj_count1=None,
                    updated_at=func.now(),
                )
            )
            if result.rowcount != 1:
                return False
            await self._record(conn, [audit])
            return True

    async def delete_device(self, dev_eui: str, manufacturer: str | None, audit: AuditRecord) -> bool:
        """Delete a device (one of `manufacturer`'s unclaimed ones, or any when None)."""
        condition = devices.c.dev_eui == dev_eui
        if manufacturer is not None:
            condition = and_(condition, devices.c.manufacturer == manufacturer, devices.c.owner_account.is_(None))
        async with self._writer.begin() as conn:
            if (await conn.execute(delete(devices).where(condition))).rowcount != 1:
                return False
            await self._record(conn, [audit])
            return True

    # -- failed-claim counters ----------------------------------------------------------------------

    async def failures(self, buckets: Sequence[str], window_start: int) -> dict[str, int]:
        return await failure_counts(self._reader, buckets, window_start)

    async def count_failure(
        self,
        buckets: Sequence[str] | Mapping[str, int],
        window_start: int,
        audit: AuditRecord,
        events_: Iterable[EventRecord] = (),
    ) -> None:
        """Add one failure to each bucket (or the given amount per bucket) in this window, with its records."""
        amounts = dict(buckets) if isinstance(buckets, Mapping) else dict.fromkeys(buckets, 1)

        async def records(conn: AsyncConnection) -> None:
            await self._record(conn, [audit], events_)

        await count_failures(self._writer, amounts, window_start, records)

    # -- ASTKs --------------------------------------------------------------------------------------

    async def add_astk(self, record: AstkRecord, audit: AuditRecord) -> None:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(
                    insert(astks),
                    {
                        "label": record.label,
                        "account": record.account,
                        "name": record.name,
                        "origin": record.origin,
                        "exported": record.exported,
                    },
                )
                await self._record(conn, [audit])
        except IntegrityError as exc:
            raise AstkExists(f"ASTK {record.name!r} exists already") from exc

    async def astk(self, account: str, name: str) -> AstkRecord | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(astks).where(astks.c.account == account, astks.c.name == name))).first()
        return None if row is None else _astk(row)

    async def list_astks(self, account: str) -> list[AstkRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(astks).where(astks.c.account == account).order_by(astks.c.name))
            return [_astk(r) for r in rows]

    async def mark_exported(self, label: str, audit: AuditRecord) -> bool:
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(astks).where(astks.c.label == label, astks.c.exported.is_(False)).values(exported=True)
            )
            if result.rowcount != 1:
                return False
            await self._record(conn, [audit])
            return True

    # -- roaming agreements -------------------------------------------------------------------------

    async def add_roaming(self, home: str, visited: str, audit: AuditRecord) -> bool:
        try:
            async with self._writer.begin() as conn:
                await conn.execute(insert(roaming_agreements), {"home_net_id": home, "visited_net_id": visited})
                await self._record(conn, [audit])
        except IntegrityError:
            return False
        return True

    async def list_roaming(self) -> list[tuple[str, str]]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(roaming_agreements.c.home_net_id, roaming_agreements.c.visited_net_id).order_by(
                    roaming_agreements.c.home_net_id, roaming_agreements.c.visited_net_id
                )
            )
            return [(r.home_net_id, r.visited_net_id) for r in rows]

    async def remove_roaming(self, home: str, visited: str, audit: AuditRecord) -> bool:
        async with self._writer.begin() as conn:
            result = await conn.execute(
                delete(roaming_agreements).where(
                    roaming_agreements.c.home_net_id == home, roaming_agreements.c.visited_net_id == visited
                )
            )
            if result.rowcount != 1:
                return False
            await self._record(conn, [audit])
            return True

    async def roaming_allowed(self, home: str, visited: str) -> bool:
        async with self._reader.connect() as conn:
            row = await conn.execute(
                select(roaming_agreements.c.home_net_id).where(
                    roaming_agreements.c.home_net_id == home, roaming_agreements.c.visited_net_id == visited
                )
            )
            return row.first() is not None

    # -- audit log and events -----------------------------------------------------------------------

    async def audit(
        self, *, account: str | None, dev_eui: str | None, after: int | None, limit: int, newest_first: bool = False
    ) -> list[StoredAudit]:
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
                StoredAudit(
                    r.id, _utc(r.at), r.account, r.key_id, r.source, r.action, r.dev_eui, json.loads(r.details)
                )
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
        try:
            async with self._writer.begin() as conn:
                await conn.execute(
                    insert(command_replies),
                    {"account": account, "request_id": request_id, "reply": json.dumps(dict(reply))},
                )
        except IntegrityError:
            return


def _per_device_audit(batch_id: str, template: AuditRecord) -> Any:
    """INSERT INTO audit_log SELECT ...: the template's entry once per staged device of the batch, in line order."""
    constants = {
        "account": template.account,
        "key_id": template.key_id,
        "source": template.source[:128],
        "action": template.action,
        "owner_account": template.owner_account,
        "details": json.dumps(dict(template.details), sort_keys=True),
    }
    values = [literal(value, audit_log.c[name].type).label(name) for name, value in constants.items()]
    rows = (
        select(*values, import_rows.c.dev_eui)
        .where(import_rows.c.batch_id == batch_id)
        .order_by(import_rows.c.line)
    )
    return insert(audit_log).from_select([*constants, "dev_eui"], rows)


def _key_row(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "account": key.account,
        "secret_hash": key.secret_hash,
        "scopes": " ".join(sorted(key.scopes)),
    }


def _key_record(row: Any, kind: str | None) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        account=row.account,
        secret_hash=row.secret_hash,
        scopes=tuple(row.scopes.split()),
        created_at=utc(row.created_at),
        revoked_at=utc(row.revoked_at),
        account_kind=kind,
    )


def _astk(row: Any) -> AstkRecord:
    return AstkRecord(row.label, row.account, row.name, row.origin, bool(row.exported), _utc(row.created_at))


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        row.seq, row.event_id, row.type, row.account, row.dev_eui, _utc(row.time), json.loads(row.data)
    )


_BLOB_COLUMNS = ("app_key_blob", "nwk_key_blob")


def staged_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A device row in JSON-safe form for the staging table (wrapped blobs as hex)."""
    out = dict(row)
    for name in _BLOB_COLUMNS:
        if out.get(name) is not None:
            out[name] = out[name].hex()
    return out


def _revive(row: dict[str, Any]) -> dict[str, Any]:
    for name in _BLOB_COLUMNS:
        if row.get(name) is not None:
            row[name] = bytes.fromhex(row[name])
    return row
