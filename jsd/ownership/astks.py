"""Application-server transport keys (ASTKs): a subscriber's keys that wrap the AppSKeys its devices' NSs fetch.

The key itself lives in the HSM: imported, or generated there and shown exactly once.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from jsd.hsm import Hsm, KekExists, KeyNotExportable
from jsd.ownership.model import AlreadyExported, AstkView, Conflict, NoSuchResource, Principal
from jsd.ownership.rules import audit, hsm_guard, invalid, need
from jsd.registry.astks import AstkExists, AstkRecord, AstkStore

__all__ = ["AstkService"]

_ASTK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class AstkService:
    """An account's ASTKs by name; the HSM label stays inside the Join Server."""

    def __init__(self, store: AstkStore, hsm: Hsm) -> None:
        self._store = store
        self._hsm = hsm

    async def create_astk(self, p: Principal, name: str, key: bytes | None) -> AstkView:
        """An application-server transport key: imported, or generated in the HSM for one later export."""
        need(p, "astk")
        if not isinstance(name, str) or not _ASTK_NAME.fullmatch(name):
            raise invalid("name", "1-64 characters from [A-Za-z0-9._-]")
        if await self._store.astk(p.account, name) is not None:
            raise Conflict(f"ASTK {name!r} exists already")
        label = f"astk-{secrets.token_hex(8)}"
        try:
            with hsm_guard("create_astk"):
                if key is None:
                    await self._hsm.generate_exportable_kek(label)
                else:
                    await self._hsm.import_kek(label, key)
        except KekExists:
            raise Conflict("label collision in the HSM; try again") from None
        origin = "generated" if key is None else "imported"
        record = AstkRecord(label, p.account, name, origin, key is not None, datetime.now(UTC))
        try:
            await self._store.add_astk(record, audit(p, "astk.created", details={"astk": name, "origin": origin}))
        except AstkExists:
            raise Conflict(f"ASTK {name!r} exists already") from None
        stored = await self._store.astk(p.account, name)
        assert stored is not None
        return _astk_view(stored)

    async def list_astks(self, p: Principal) -> list[AstkView]:
        need(p, "astk")
        return [_astk_view(a) for a in await self._store.list_astks(p.account)]

    async def export_astk(self, p: Principal, name: str) -> bytes:
        """The clear value of a generated ASTK, exactly once, for the subscriber's application server."""
        need(p, "astk")
        record = await self._store.astk(p.account, name) if isinstance(name, str) else None
        if record is None:
            raise NoSuchResource(f"ASTK {name!r} not found")
        if record.exported:
            raise AlreadyExported(f"ASTK {name!r} was imported or exported already")
        if not await self._store.mark_exported(record.label, audit(p, "astk.exported", details={"astk": name})):
            raise AlreadyExported(f"ASTK {name!r} was exported already")
        try:
            with hsm_guard("export_kek_once"):
                return await self._hsm.export_kek_once(record.label)
        except KeyNotExportable:
            raise AlreadyExported(f"ASTK {name!r} was exported already") from None


def _astk_view(a: AstkRecord) -> AstkView:
    return AstkView(a.name, a.label, a.origin, a.exported, a.created_at)
