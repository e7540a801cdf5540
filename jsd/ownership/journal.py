"""The audit log and the events as an account may read them, and the stored replies of MQTT commands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jsd.ownership.model import AuditEntry, EventView, Principal
from jsd.ownership.rules import invalid, need, page_limit
from jsd.registry.journal import Journal, StoredEvent

__all__ = ["JournalService", "event_view"]

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")


class JournalService:
    """Reads of the journal: an operator reads everything, an account what it did and what its devices saw."""

    def __init__(self, store: Journal) -> None:
        self._store = store

    async def audit(
        self,
        p: Principal,
        dev_eui: bytes | None = None,
        after: int | None = None,
        limit: int = 100,
        *,
        newest_first: bool = False,
    ) -> list[AuditEntry]:
        need(p, "audit:read")
        return await self._store.audit(
            account=None if p.is_operator else p.account,
            dev_eui=None if dev_eui is None else dev_eui.hex(),
            after=after,
            limit=page_limit(limit),
            newest_first=newest_first,
        )

    async def events(
        self,
        p: Principal,
        after: int | None = None,
        limit: int = 100,
        dev_eui: bytes | None = None,
        type: str | None = None,  # noqa: A002 - the query parameter's name
        *,
        types: tuple[str, ...] | None = None,
        newest_first: bool = False,
    ) -> list[EventView]:
        """The caller's events in seq order; `types`: any of these; `newest_first`: the last `limit` ones."""
        need(p, "events:read")
        found = await self._store.events(
            account=None if p.is_operator else p.account,
            after=after,
            limit=page_limit(limit),
            dev_eui=None if dev_eui is None else dev_eui.hex(),
            type_=type,
            types=types,
            newest_first=newest_first,
        )
        return [event_view(e) for e in found]

    # -- idempotent commands ------------------------------------------------------------------------

    async def stored_reply(self, account: str, request_id: str) -> dict[str, Any] | None:
        if not _REQUEST_ID.fullmatch(request_id):
            raise invalid("request_id", "1-64 printable ASCII characters")
        return await self._store.reply(account, request_id)

    async def store_reply(self, account: str, request_id: str, reply: Mapping[str, Any]) -> None:
        await self._store.store_reply(account, request_id, reply)


def event_view(e: StoredEvent) -> EventView:
    return EventView(
        e.seq, e.event_id, e.type, e.time, e.account, None if e.dev_eui is None else bytes.fromhex(e.dev_eui), e.data
    )
