"""The nonce-state version as the mark of every change a join reads, so its version-checked commit sees them.

A join reads one device row with its `device_nonces.version` and commits only over that same version. So
every write that changes what the join reads moves the version in its own transaction (`bump`), and the
version never repeats for a DevEUI: deleting a device keeps its last version (`retired_versions`), and a
re-import of that DevEUI starts above it (`fresh_rows`). A join that read the deleted device then cannot
commit an accept made from its old keys over the new one; it reads again, as after any nonce race.

Lock order on PostgreSQL: the nonce rows first (`lock`, in DevEUI order), then the device rows, as a join's
commit takes them (its session-key insert holds a key-share lock on the device row); an edit that locked the
device row first could deadlock with a commit in flight. On SQLite one write transaction runs at a time and
`lock` is a plain read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Update, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jsd.registry.tables import device_nonces, devices, fresh_nonces_row, retired_versions

__all__ = ["bump", "change", "delete_device", "fresh_rows", "lock"]


def lock(*dev_euis: str) -> Select[Any]:
    """Take these devices' nonce rows (PostgreSQL), as a join's commit would, before their device rows."""
    nonces = device_nonces.c
    return select(nonces.dev_eui).where(nonces.dev_eui.in_(dev_euis)).order_by(nonces.dev_eui).with_for_update()


def bump(*dev_euis: str) -> Update:
    """Move the version of these devices' nonce state: a join computed over the old one can no longer commit."""
    return update(device_nonces).where(device_nonces.c.dev_eui.in_(dev_euis)).values(version=device_nonces.c.version + 1)


async def change(conn: AsyncConnection, statement: Update, *dev_euis: str) -> int:
    """Run `statement`, an update of these devices' rows, with their versions moved; how many rows it changed."""
    await conn.execute(lock(*dev_euis))
    changed = int((await conn.execute(statement)).rowcount)
    if changed:
        await conn.execute(bump(*dev_euis))
    return changed


async def fresh_rows(conn: AsyncConnection, dev_euis: Sequence[str]) -> list[dict[str, Any]]:
    """Nonce rows for devices being inserted in this transaction; a DevEUI deleted before continues above
    its last version, and its retired entry goes (the new row carries the version from now on)."""
    retired = retired_versions.c
    rows = await conn.execute(select(retired.dev_eui, retired.version).where(retired.dev_eui.in_(dev_euis)))
    found: dict[str, int] = {eui: version for eui, version in rows}
    if found:
        await conn.execute(delete(retired_versions).where(retired.dev_eui.in_(list(found))))
    return [fresh_nonces_row(eui, found[eui] + 1 if eui in found else 0) for eui in dev_euis]


async def delete_device(conn: AsyncConnection, dev_eui: str, condition: ColumnElement[bool]) -> bool:
    """Delete the device if `condition` holds (it names this DevEUI), keeping its last version; False if not.

    The first write checks the condition and, on SQLite, starts the write transaction, so the version read
    next is the last one (on PostgreSQL the nonce row is locked by then: no join commits in between).
    """
    await conn.execute(lock(dev_eui))
    if (await conn.execute(update(devices).where(condition).values(updated_at=func.now()))).rowcount != 1:
        return False
    version = (await conn.execute(select(device_nonces.c.version).where(device_nonces.c.dev_eui == dev_eui))).scalar()
    await conn.execute(delete(devices).where(devices.c.dev_eui == dev_eui))
    if version is not None:
        await conn.execute(delete(retired_versions).where(retired_versions.c.dev_eui == dev_eui))
        await conn.execute(insert(retired_versions).values(dev_eui=dev_eui, version=version))
    return True
