"""Persistence of application-server transport keys (ASTKs): their names per account; the keys stay in the HSM."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from jsd.registry.errors import RegistryError
from jsd.registry.journal import AuditRecord, JournalledStore, utc
from jsd.registry.tables import astks

__all__ = ["AstkExists", "AstkRecord", "AstkStore"]


class AstkExists(RegistryError):
    """This account already has an ASTK of that name."""


@dataclass(frozen=True)
class AstkRecord:
    label: str
    account: str
    name: str
    origin: str
    exported: bool
    created_at: datetime


class AstkStore(JournalledStore):
    """ASTKs by account and name; `label` is the key's label in the HSM."""

    async def add_astk(self, record: AstkRecord, audit: AuditRecord) -> None:
        row = {
            "label": record.label,
            "account": record.account,
            "name": record.name,
            "origin": record.origin,
            "exported": record.exported,
        }
        if not await self._insert(insert(astks).values(row), [audit]):
            raise AstkExists(f"ASTK {record.name!r} exists already")

    async def astk(self, account: str, name: str) -> AstkRecord | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(astks).where(astks.c.account == account, astks.c.name == name))).first()
        return None if row is None else _astk(row)

    async def list_astks(self, account: str) -> list[AstkRecord]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(astks).where(astks.c.account == account).order_by(astks.c.name))
            return [_astk(r) for r in rows]

    async def mark_exported(self, label: str, audit: AuditRecord) -> bool:
        return await self._one_row(
            update(astks).where(astks.c.label == label, astks.c.exported.is_(False)).values(exported=True), [audit]
        )


def _astk(row: Any) -> AstkRecord:
    return AstkRecord(row.label, row.account, row.name, row.origin, bool(row.exported), utc(row.created_at))
