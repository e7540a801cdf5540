"""Persistence of devices as the ownership workflow sees them, and of bulk imports (staged, then moved in).

Rules (who sees which device, what a token is worth) live in `jsd.ownership`; this module stores and fetches.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from jsd.registry.errors import DeviceExists
from jsd.registry.journal import AuditRecord, EventRecord, JournalledStore, audit_row, utc, write_records
from jsd.registry.tables import (
    astks,
    audit_log,
    device_nonces,
    devices,
    import_rows,
    reset_nonces_values,
    spent_owner_tokens,
)
from jsd.registry.versions import bump, delete_device, fresh_rows, lock

__all__ = ["DeviceStore", "OwnedDevice", "SPENT_TOKEN", "staged_row"]


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


_OWNED_COLUMNS = tuple(
    astks.c.name.label("astk_name") if f.name == "astk_name" else devices.c[f.name] for f in fields(OwnedDevice)
)
"""One column per field of `OwnedDevice`, in its order; the ASTK's name comes from its own table."""
_SELECT_OWNED = select(*_OWNED_COLUMNS).select_from(devices.outerjoin(astks, astks.c.label == devices.c.astk_label))


SPENT_TOKEN = select(spent_owner_tokens.c.token_hash).where(spent_owner_tokens.c.token_hash == bindparam("p_hash"))
_HELD = select(devices.c.dev_eui).where(devices.c.owner_token_hash == bindparam("p_hash"))


def _owned(row: Any) -> OwnedDevice:
    values = dict(row._mapping)
    for name in ("secure_element", "keys_exported"):
        values[name] = bool(values[name])
    for name in ("created_at", "claimed_at"):
        values[name] = utc(values[name])
    return OwnedDevice(**values)


class DeviceStore(JournalledStore):
    """Devices of the ownership workflow (no nonce state, no key blobs), their changes and bulk imports."""

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

    async def token_in_use(self, token_hash: str) -> bool:
        """True if the token was ever spent or belongs to a device now: a token never works twice."""
        async with self._reader.connect() as conn:
            for statement in (SPENT_TOKEN, _HELD):
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
                await conn.execute(insert(device_nonces), await fresh_rows(conn, [row["dev_eui"]]))
                await write_records(conn, [audit], events_)
        except IntegrityError as exc:
            raise DeviceExists(f"device {row['dev_eui']} exists already, or its owner token is taken") from exc

    async def stage(
        self,
        batch_id: str,
        rows: Sequence[tuple[int, str, Mapping[str, Any]]],
        answer_id: str | None = None,
        answers: Sequence[tuple[int, str, bytes]] = (),
    ) -> None:
        """Park prepared rows of a bulk import (wrapped keys only) until the whole file has been checked.

        `answers` (line, DevEUI, sealed answer line) go under `answer_id` in the same transaction.
        """
        staged = [
            {"batch_id": batch_id, "line": line, "dev_eui": eui, "row": json.dumps(dict(row)).encode()}
            for line, eui, row in rows
        ]
        if answer_id is not None:
            staged += [{"batch_id": answer_id, "line": line, "dev_eui": eui, "row": row} for line, eui, row in answers]
        if staged:
            async with self._writer.begin() as conn:
                await conn.execute(insert(import_rows), staged)

    async def staged_page(self, batch_id: str, after: int, limit: int) -> list[tuple[int, str, bytes]]:
        """(line, DevEUI, row) of staged rows after line `after`, in line order."""
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(import_rows.c.line, import_rows.c.dev_eui, import_rows.c.row)
                .where(import_rows.c.batch_id == batch_id, import_rows.c.line > after)
                .order_by(import_rows.c.line)
                .limit(limit)
            )
            return [(r.line, r.dev_eui, bytes(r.row)) for r in rows]

    async def staged(self, batch_id: str) -> int:
        """How many rows of a bulk import are staged so far (0 once it is committed or dropped)."""
        async with self._reader.connect() as conn:
            count = await conn.execute(
                select(func.count()).select_from(import_rows).where(import_rows.c.batch_id == batch_id)
            )
            return int(count.scalar() or 0)

    async def drop_batch(self, *batch_ids: str) -> None:
        async with self._writer.begin() as conn:
            await conn.execute(delete(import_rows).where(import_rows.c.batch_id.in_(batch_ids)))

    async def commit_batch(
        self,
        batch_id: str,
        audit: AuditRecord,
        events_of: Callable[[Mapping[str, Any]], Iterable[EventRecord]],
        device_audit: AuditRecord | None = None,
        chunk: int = 1_000,
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
                    await conn.execute(insert(device_nonces), await fresh_rows(conn, [r["dev_eui"] for r in rows]))
                    await write_records(conn, (), [e for r in rows for e in events_of(r)])
                if device_audit is not None:
                    await conn.execute(_per_device_audit(batch_id, device_audit))
                await write_records(conn, [audit])
                await conn.execute(delete(import_rows).where(import_rows.c.batch_id == batch_id))
        except IntegrityError as exc:
            raise DeviceExists("a device of the batch exists already, or an owner token is taken") from exc

    async def update_owned(
        self,
        dev_eui: str,
        owner: str | None,
        values: Mapping[str, Any],
        audit: AuditRecord,
        events_: Iterable[EventRecord],
    ) -> bool:
        """Change a device still owned by `owner` (None = any owner: operator); False if it is not.

        The nonce version moves with it, so a join that read the device before cannot commit over the change."""
        condition = devices.c.dev_eui == dev_eui
        if owner is not None:
            condition = and_(condition, devices.c.owner_account == owner)
        return await self._one_row(
            update(devices).where(condition).values(**values, updated_at=func.now()),
            [audit],
            events_,
            then=[bump(dev_eui)],
            before=[lock(dev_eui)],
        )

    async def reset_nonces(self, dev_eui: str, audit: AuditRecord) -> bool:
        """Forget the DevNonces seen (a device whose nonce store was wiped); JoinNonce keeps counting."""
        return await self._one_row(
            update(device_nonces)
            .where(device_nonces.c.dev_eui == dev_eui)
            .values(reset_nonces_values()),
            [audit],
        )

    async def delete_device(self, dev_eui: str, manufacturer: str | None, audit: AuditRecord) -> bool:
        """Delete a device (one of `manufacturer`'s unclaimed ones, or any when None), keeping its last version."""
        condition = devices.c.dev_eui == dev_eui
        if manufacturer is not None:
            condition = and_(condition, devices.c.manufacturer == manufacturer, devices.c.owner_account.is_(None))
        async with self._writer.begin() as conn:
            if not await delete_device(conn, dev_eui, condition):
                return False
            await write_records(conn, [audit])
            return True


def _per_device_audit(batch_id: str, template: AuditRecord) -> Any:
    """INSERT INTO audit_log SELECT ...: the template's entry once per staged device of the batch, in line order."""
    constants = audit_row(template)
    values = [literal(value, audit_log.c[name].type).label(name) for name, value in constants.items()]
    rows = (
        select(*values, import_rows.c.dev_eui)
        .where(import_rows.c.batch_id == batch_id)
        .order_by(import_rows.c.line)
    )
    return insert(audit_log).from_select([*constants, "dev_eui"], rows)


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
