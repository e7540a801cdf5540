"""Contract: every write that changes what a join reads moves the nonce version in its own transaction, so a join
read before it fails its version-checked commit after it (and reads again); a deleted DevEUI never repeats a version.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from jsd.registry import Device, NewDevice, NonceConflict, NotFound, Registry, SessionKey, migrate
from jsd.registry.accounts import ApiKeyRecord
from jsd.registry.astks import AstkRecord
from jsd.registry.devices import staged_row
from jsd.registry.journal import AuditRecord
from jsd.registry.ops import switch_astk
from jsd.registry.stores import OwnershipStores
from jsd.registry.tables import device_nonces, retired_versions, session_keys

from .conftest import Database

EUI = "0080000005000001"
DEV_EUI = bytes.fromhex(EUI)
JOIN_EUI = "70b3d57ed0000001"
ACCOUNT = "alice"
TOKEN = "ab" * 32
AUDIT = AuditRecord(None, None, "test", "test")
OLD_KEYS, NEW_KEYS = b"\x01" * 24, b"\x02" * 24


@dataclass
class Db:
    registry: Registry
    stores: OwnershipStores
    engine: AsyncEngine


def device_row(app_key_blob: bytes = OLD_KEYS, **changes: Any) -> dict[str, Any]:
    """A claimed device with a home NetID and an ASTK, as the ownership stores insert it."""
    row = {
        "dev_eui": EUI, "join_eui": JOIN_EUI, "mac_version": "1.0.3", "hsm_group": "default",
        "app_key_blob": app_key_blob, "owner_account": ACCOUNT, "home_net_id": "000013", "astk_label": "astk-1",
        "manufacturer": "maker",
    }  # fmt: skip
    return {**row, **changes}


@pytest.fixture
async def db(database: Database) -> Db:
    engine = database.engine()
    await migrate(engine)
    stores = OwnershipStores.on(engine)
    await stores.accounts.create_account(ACCOUNT, "subscriber", "Alice", ApiKeyRecord("k1", ACCOUNT, "x", ()), AUDIT)
    for n in (1, 2):
        record = AstkRecord(f"astk-{n}", ACCOUNT, f"as-{n}", "generated", False, datetime.now(UTC))
        await stores.astks.add_astk(record, AUDIT)
    await stores.devices.add_device(device_row(), AUDIT, ())
    return Db(Registry(engine), stores, engine)


async def read(db: Db) -> Device:
    """A join's first step: the device and its nonce state, read without a lock."""
    device = await db.registry.get_device(DEV_EUI)
    assert device is not None
    return device


async def commit_accept(db: Db, device: Device, dev_nonce: int = 1) -> None:
    """A join's last step: the accept computed from `device`, committed only over the version it read."""
    state = device.nonces
    join_nonce = state.join_nonce + 1
    new = dataclasses.replace(
        state, join_nonce=join_nonce, last_dev_nonce=dev_nonce, used_dev_nonces=(*state.used_dev_nonces, dev_nonce)
    )
    session = SessionKey(f"{join_nonce:08x}{dev_nonce:04x}".ljust(32, "0"), DEV_EUI, "default", b"\x03" * 24,
                         join_nonce, dev_nonce)  # fmt: skip
    await db.registry.commit_join(DEV_EUI, state.version, new, session)


async def unclaim(db: Db) -> None:
    """Back to the maker's stock with an owner token (the state a claim starts from)."""
    assert await db.stores.devices.update_owned(
        EUI, None, {"owner_account": None, "owner_token_hash": TOKEN, "home_net_id": None, "astk_label": None},
        AUDIT, (),
    )  # fmt: skip


async def claim(db: Db) -> None:
    assert await db.stores.claims.claim(EUI, TOKEN, ACCOUNT, AUDIT, ())


async def rotate_astk(db: Db) -> None:
    assert await switch_astk(db.engine, ACCOUNT, "as-1", "as-2") == 1


Step = Callable[[Db], Awaitable[object]]
EDITS: dict[str, tuple[Step | None, Step]] = {
    "registry set_home_net_id": (None, lambda db: db.registry.set_home_net_id(DEV_EUI, bytes.fromhex("000014"))),
    "registry set_astk_label": (None, lambda db: db.registry.set_astk_label(DEV_EUI, "astk-2")),
    "claim": (unclaim, claim),
    "update_owned net_id": (None, lambda db: db.stores.devices.update_owned(
        EUI, ACCOUNT, {"home_net_id": "000014"}, AUDIT, ())),
    "update_owned astk": (None, lambda db: db.stores.devices.update_owned(
        EUI, ACCOUNT, {"astk_label": "astk-2"}, AUDIT, ())),
    "update_owned release": (None, lambda db: db.stores.devices.update_owned(
        EUI, ACCOUNT, {"owner_account": None, "owner_token_hash": TOKEN, "home_net_id": None, "astk_label": None},
        AUDIT, ())),
    "ASTK rotation": (None, rotate_astk),
    "registry reset_dev_nonces": (None, lambda db: db.registry.reset_dev_nonces(DEV_EUI)),
    "reset_nonces": (None, lambda db: db.stores.devices.reset_nonces(EUI, AUDIT)),
}  # fmt: skip


@pytest.mark.parametrize("setup, edit", EDITS.values(), ids=EDITS.keys())
async def test_a_join_read_before_an_edit_cannot_commit_after_it(db: Db, setup: Step | None, edit: Step) -> None:
    if setup is not None:
        await setup(db)
    before = await read(db)

    await edit(db)

    edited = await read(db)
    assert edited.nonces.version > before.nonces.version
    with pytest.raises(NonceConflict):
        await commit_accept(db, before)
    assert (await read(db)).nonces == edited.nonces
    await commit_accept(db, edited)  # the join's retry, on what it reads now
    assert (await read(db)).nonces.join_nonce == edited.nonces.join_nonce + 1


async def test_an_edit_that_changes_nothing_leaves_the_version(db: Db) -> None:
    """A refused edit (not the owner) commits nothing: the join it raced with still commits."""
    before = await read(db)

    assert not await db.stores.devices.update_owned(EUI, "bob", {"home_net_id": "000014"}, AUDIT, ())
    assert not await db.stores.claims.claim(EUI, TOKEN, "bob", AUDIT, ())
    assert not await db.stores.devices.delete_device(EUI, "other-maker", AUDIT)

    assert (await read(db)).nonces == before.nonces
    await commit_accept(db, before)


Reimport = Callable[[Db, bytes], Awaitable[object]]


async def add_by_store(db: Db, keys: bytes) -> None:
    await db.stores.devices.add_device(device_row(keys), AUDIT, ())


async def import_batch(db: Db, keys: bytes) -> None:
    await db.stores.devices.stage("b1", [(1, EUI, staged_row(device_row(keys)))])
    await db.stores.devices.commit_batch("b1", AUDIT, lambda row: ())


async def add_by_registry(db: Db, keys: bytes) -> None:
    await db.registry.add_device(NewDevice(DEV_EUI, bytes.fromhex(JOIN_EUI), "1.0.3", "default", keys,
                                           home_net_id=bytes.fromhex("000013")))  # fmt: skip


async def add_in_bulk(db: Db, keys: bytes) -> None:
    new = NewDevice(DEV_EUI, bytes.fromhex(JOIN_EUI), "1.0.3", "default", keys, home_net_id=bytes.fromhex("000013"))
    assert await db.registry.add_devices_bulk([new]) == 1


REIMPORTS: dict[str, Reimport] = {
    "add_device": add_by_store,
    "bulk import": import_batch,
    "registry add_device": add_by_registry,
    "registry add_devices_bulk": add_in_bulk,
}
DELETES: dict[str, Step] = {
    "delete_device": lambda db: db.stores.devices.delete_device(EUI, None, AUDIT),
    "registry remove_device": lambda db: db.registry.remove_device(DEV_EUI),
}


@pytest.mark.parametrize("delete", DELETES.values(), ids=DELETES.keys())
@pytest.mark.parametrize("reimport", REIMPORTS.values(), ids=REIMPORTS.keys())
async def test_delete_and_reimport_during_a_join_cannot_commit_the_old_keys_accept(
    db: Db, delete: Step, reimport: Reimport
) -> None:
    for dev_nonce in (1, 2):  # some history, so the old version is above a new device's 0
        await commit_accept(db, await read(db), dev_nonce)
    old = await read(db)
    assert old.app_key_blob == OLD_KEYS

    await delete(db)
    with pytest.raises(NotFound):
        await commit_accept(db, old, 3)  # deleted: nothing to commit over
    await reimport(db, NEW_KEYS)

    new = await read(db)
    assert new.app_key_blob == NEW_KEYS and new.nonces.join_nonce == 0
    assert new.nonces.version > old.nonces.version
    with pytest.raises(NonceConflict):
        await commit_accept(db, old, 3)
    assert (await read(db)).nonces == new.nonces
    await commit_accept(db, new, 3)  # the retry reads the new device and its keys
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(retired_versions))).all() == []


async def test_a_deleted_devices_version_is_kept_until_its_reimport(db: Db) -> None:
    for dev_nonce in (1, 2, 3):
        await commit_accept(db, await read(db), dev_nonce)
    last = (await read(db)).nonces.version

    await db.registry.remove_device(DEV_EUI)
    async with db.engine.connect() as conn:
        kept = (await conn.execute(select(retired_versions.c.dev_eui, retired_versions.c.version))).all()
    assert [tuple(row) for row in kept] == [(EUI, last)]

    for round_ in range(2):  # deleted and re-imported twice: the version keeps climbing
        await add_by_store(db, NEW_KEYS)
        assert (await read(db)).nonces.version == last + 1 + round_
        assert await db.stores.devices.delete_device(EUI, None, AUDIT)


async def test_a_delete_waits_for_a_commit_in_flight_and_keeps_its_version(db: Db, database: Database) -> None:
    """The nonce row is locked before its version is read: a join committing meanwhile lands first and counts."""
    before = (await read(db)).nonces.version
    async with database.engine().connect() as other:
        in_flight = await other.begin()
        await other.execute(
            update(device_nonces).where(device_nonces.c.dev_eui == EUI).values(version=device_nonces.c.version + 5)
        )
        deleting = asyncio.create_task(db.stores.devices.delete_device(EUI, None, AUDIT))
        await asyncio.sleep(0.3)
        assert not deleting.done()
        await in_flight.commit()
    assert await deleting

    async with db.engine.connect() as conn:
        assert (await conn.execute(select(retired_versions.c.version))).scalar_one() == before + 5


LOCKING: dict[str, tuple[Step | None, Step]] = {
    "claim": EDITS["claim"],
    "release": EDITS["update_owned release"],
    "ASTK rotation": EDITS["ASTK rotation"],
    "delete": (None, DELETES["delete_device"]),
}


@pytest.mark.parametrize("setup, edit", LOCKING.values(), ids=LOCKING.keys())
async def test_an_edit_waits_behind_a_commit_in_flight_without_deadlock(
    db: Db, database: Database, setup: Step | None, edit: Step
) -> None:
    """A join's commit takes the nonce row, then a key-share lock on the device row (its session key's foreign
    key); an edit takes them in the same order, so it waits for the commit instead of deadlocking with it."""
    if setup is not None:
        await setup(db)
    async with database.engine().connect() as other:
        in_flight = await other.begin()
        await other.execute(
            update(device_nonces).where(device_nonces.c.dev_eui == EUI).values(version=device_nonces.c.version + 1)
        )
        editing = asyncio.create_task(edit(db))
        await asyncio.sleep(0.3)
        assert not editing.done()
        session = {"session_key_id": "cd" * 16, "dev_eui": EUI, "hsm_group": "default",
                   "app_s_key_blob": b"\x03" * 24, "join_nonce": 1, "dev_nonce": 1}  # fmt: skip
        await asyncio.wait_for(other.execute(insert(session_keys).values(session)), 0.5)
        await in_flight.commit()
    await editing
