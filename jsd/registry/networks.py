"""Persistence of roaming agreements: which visited NS may ask for devices of which home NetID.

The network servers themselves are rows of the `Registry` (the LBI finds its peers there on every request).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, delete, insert, select

from jsd.registry.journal import AuditRecord, JournalledStore
from jsd.registry.tables import roaming_agreements

__all__ = ["RoamingStore"]

_AGREEMENT = roaming_agreements.c.home_net_id, roaming_agreements.c.visited_net_id


class RoamingStore(JournalledStore):
    """Agreements as (home NetID, visited NetID) in lowercase hex."""

    async def add_roaming(self, home: str, visited: str, audit: AuditRecord) -> bool:
        """False if this agreement exists already."""
        return await self._insert(insert(roaming_agreements).values(home_net_id=home, visited_net_id=visited), [audit])

    async def list_roaming(self) -> list[tuple[str, str]]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(*_AGREEMENT).order_by(*_AGREEMENT))
            return [(r.home_net_id, r.visited_net_id) for r in rows]

    async def remove_roaming(self, home: str, visited: str, audit: AuditRecord) -> bool:
        return await self._one_row(delete(roaming_agreements).where(_match(home, visited)), [audit])

    async def roaming_allowed(self, home: str, visited: str) -> bool:
        async with self._reader.connect() as conn:
            row = await conn.execute(select(roaming_agreements.c.home_net_id).where(_match(home, visited)))
            return row.first() is not None


def _match(home: str, visited: str) -> ColumnElement[bool]:
    return and_(_AGREEMENT[0] == home, _AGREEMENT[1] == visited)
