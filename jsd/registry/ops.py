"""Operations on the whole database: health facts, the nonce margins after a restore, KEK and ASTK switches.

These run outside the join path (``/readyz``, ``/metrics``, the ``jsd db``/``jsd rotate`` commands), on
SQLAlchemy Core; each switch commits in short transactions so that joins keep flowing meanwhile.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import and_, case, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry.engine import read_only
from jsd.registry.errors import NotFound
from jsd.registry.journal import new_event
from jsd.registry.tables import astks, audit_log, device_nonces, devices, events, network_servers, outbox

__all__ = [
    "COUNTER_MAC_VERSIONS",
    "MAX_DEV_NONCE",
    "MAX_JOIN_NONCE",
    "AfterRestore",
    "after_restore",
    "known_revisions",
    "nonce_summary",
    "outbox_stats",
    "schema_head",
    "schema_revision",
    "set_ns_kek",
    "switch_astk",
]

MAX_JOIN_NONCE = 0xFFFFFF
MAX_DEV_NONCE = 0xFFFF
COUNTER_MAC_VERSIONS = ("1.0.4", "1.1", "1.1.0")
"""Device versions whose DevNonce is a counter that must grow (LoRaWAN 1.0.4 and 1.1)."""

_VERSIONS = Path(__file__).with_name("migrations") / "versions"
_REVISION_NAMES = ("revision", "down_revision")


def schema_head() -> str:
    """The newest migration shipped with this code, read from the files (alembic itself costs ~11 MB per worker)."""
    revisions, parents = _revisions()
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise RuntimeError(f"the shipped migrations have {len(heads)} heads: {heads}")
    return heads[0]


def known_revisions() -> frozenset[str]:
    """Every schema revision this code can migrate from."""
    return frozenset(_revisions()[0])


def _revisions() -> tuple[set[str], set[str]]:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in _VERSIONS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if not isinstance(target, ast.Name) or target.id not in _REVISION_NAMES or node.value is None:
                    continue
                value = ast.literal_eval(node.value)
                if target.id == "revision" and isinstance(value, str):
                    revisions.add(value)
                elif target.id == "down_revision" and value:
                    parents.update([value] if isinstance(value, str) else value)
    return revisions, parents


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with read_only(engine).connect() as conn:
        has_table = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
        if not has_table:
            return None
        return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()


async def outbox_stats(engine: AsyncEngine) -> tuple[int, float | None]:
    """Events waiting for the broker, and the age in seconds of the oldest one (None when none waits)."""
    statement = select(func.count(), func.min(events.c.time)).select_from(
        outbox.join(events, events.c.event_id == outbox.c.event_id)
    )
    async with read_only(engine).connect() as conn:
        depth, oldest = (await conn.execute(statement)).one()
    if oldest is None:
        return int(depth), None
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(depth), max(0.0, (datetime.now(UTC) - oldest).total_seconds())


@dataclass(frozen=True)
class AfterRestore:
    """What `after_restore` changed."""

    devices: int
    counters_raised: int
    exhausted: int
    join_nonce_margin: int
    dev_nonce_margin: int


async def after_restore(engine: AsyncEngine, join_nonce_margin: int, dev_nonce_margin: int) -> AfterRestore:
    """Move every device's nonce state past what it may have reached after the backup was taken.

    Every JoinNonce goes up by `join_nonce_margin` (capped at 2^24-1: such a device gets no JoinNonce
    again, and needs new root keys, rather than one it may already have had). Devices whose DevNonce is a
    counter need the next one above their stored last DevNonce plus `dev_nonce_margin`. The version of
    every nonce row goes up too, so a join computed before cannot commit over it. One transaction.
    """
    if not 0 < join_nonce_margin <= MAX_JOIN_NONCE or not 0 <= dev_nonce_margin <= MAX_DEV_NONCE:
        raise ValueError("margins: 1 <= JoinNonce margin <= 2^24-1, 0 <= DevNonce margin <= 65535")
    raised = device_nonces.c.join_nonce + join_nonce_margin
    async with engine.begin() as conn:  # reads first: BEGIN IMMEDIATE on SQLite
        exhausted = (
            await conn.execute(
                select(func.count()).where(device_nonces.c.join_nonce > MAX_JOIN_NONCE - join_nonce_margin)
            )
        ).scalar_one()
        moved = await conn.execute(
            update(device_nonces).values(
                join_nonce=case((raised > MAX_JOIN_NONCE, MAX_JOIN_NONCE), else_=raised),
                version=device_nonces.c.version + 1,
                updated_at=func.now(),
            )
        )
        counters = 0
        if dev_nonce_margin:
            bar = device_nonces.c.last_dev_nonce + dev_nonce_margin
            counter_devices = select(devices.c.dev_eui).where(devices.c.mac_version.in_(COUNTER_MAC_VERSIONS))
            result = await conn.execute(
                update(device_nonces)
                .where(and_(device_nonces.c.last_dev_nonce.is_not(None), device_nonces.c.dev_eui.in_(counter_devices)))
                .values(last_dev_nonce=case((bar > MAX_DEV_NONCE, MAX_DEV_NONCE), else_=bar))
            )
            counters = int(result.rowcount)
        summary = AfterRestore(int(moved.rowcount), counters, int(exhausted), join_nonce_margin, dev_nonce_margin)
        await conn.execute(
            insert(audit_log).values(
                account=None, key_id=None, source="cli", action="db.after_restore",
                details=json.dumps(summary.__dict__, sort_keys=True),
            )
        )  # fmt: skip
    return summary


async def nonce_summary(engine: AsyncEngine) -> tuple[int, int]:
    """Devices with nonce state, and the highest JoinNonce issued to any of them (for backup manifests)."""
    async with read_only(engine).connect() as conn:
        count, highest = (
            await conn.execute(select(func.count(), func.coalesce(func.max(device_nonces.c.join_nonce), 0)))
        ).one()
    return int(count), int(highest)


async def set_ns_kek(engine: AsyncEngine, net_id: str, label: str) -> str:
    """Answers to this NS are wrapped under `label` from now on (each worker within its sender cache time);
    returns the previous label. The NS must already know both keys: each answer names its KEKLabel."""
    async with engine.begin() as conn:  # reads first: BEGIN IMMEDIATE on SQLite
        previous = (
            await conn.execute(select(network_servers.c.kek_label).where(network_servers.c.net_id == net_id))
        ).scalar()
        if previous is None:
            raise NotFound(f"network server {net_id} not found")
        await conn.execute(update(network_servers).where(network_servers.c.net_id == net_id).values(kek_label=label))
        await conn.execute(
            insert(audit_log).values(
                account=None, key_id=None, source="cli", action="ns.kek_rotated",
                details=json.dumps({"net_id": net_id, "from": previous, "to": label}, sort_keys=True),
            )
        )  # fmt: skip
    return str(previous)


async def switch_astk(engine: AsyncEngine, account: str, old: str, new: str, batch: int = 500) -> int:
    """Move the account's devices from its ASTK named `old` to the one named `new`, `batch` devices per
    transaction (rerun after an interruption: it carries on); returns how many moved in this call.

    Each moved device gets a ``device.astk_set`` event, as with ``PUT .../astk``.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    labels: dict[str, str] = {}
    async with read_only(engine).connect() as conn:
        for name in (old, new):
            label = (
                await conn.execute(select(astks.c.label).where(astks.c.account == account, astks.c.name == name))
            ).scalar()
            if label is None:
                raise NotFound(f"account {account!r} has no ASTK named {name!r}")
            labels[name] = label
    moved = 0
    while True:
        async with engine.begin() as conn:  # reads first: BEGIN IMMEDIATE on SQLite
            euis = list(
                (
                    await conn.execute(
                        select(devices.c.dev_eui)
                        .where(devices.c.owner_account == account, devices.c.astk_label == labels[old])
                        .limit(batch)
                    )
                ).scalars()
            )
            if not euis:
                return moved
            await conn.execute(
                update(devices)
                .where(devices.c.dev_eui.in_(euis), devices.c.astk_label == labels[old])
                .values(astk_label=labels[new], updated_at=func.now())
            )
            for eui in euis:
                event = new_event("device.astk_set", account, eui, {"astk": new})
                await conn.execute(
                    insert(events).values(
                        event_id=event.event_id, type=event.type, account=event.account, dev_eui=eui,
                        data=json.dumps(dict(event.data), sort_keys=True),
                    )
                )  # fmt: skip
                await conn.execute(insert(outbox).values(event_id=literal(event.event_id)))
            await conn.execute(
                insert(audit_log).values(
                    account=None, key_id=None, source="cli", action="astk.rotated", owner_account=account,
                    details=json.dumps({"from": old, "to": new, "devices": len(euis)}, sort_keys=True),
                )
            )  # fmt: skip
            moved += len(euis)
