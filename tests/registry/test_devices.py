"""Contract: devices and their nonce state, on every backend."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from jsd.registry import (
    DeviceExists,
    NewDevice,
    NonceState,
    NotFound,
    Registry,
    SessionKey,
)

JOIN_EUI = bytes.fromhex("70b3d57ed0000001")
FRESH = NonceState(
    version=0, join_nonce=0, last_dev_nonce=None, used_dev_nonces=(), rj_count0=None, rj_count1=None
)


def new_device(n: int = 1, **changes: Any) -> NewDevice:
    fields: dict[str, Any] = {
        "dev_eui": bytes.fromhex("00800000040000") + bytes([n]),
        "join_eui": JOIN_EUI,
        "mac_version": "1.0.2",
        "hsm_group": "default",
        "app_key_blob": b"\x01" * 24,
    }
    fields.update(changes)
    return NewDevice(**fields)


async def test_add_then_get_returns_every_field_and_a_fresh_nonce_state(registry: Registry) -> None:
    d = new_device(
        mac_version="1.1",
        nwk_key_blob=b"\x02" * 24,
        home_net_id=bytes.fromhex("c00053"),
        astk_label="astk-app-1",
        owner_account="acme",
        name="meter 7",
    )
    await registry.add_device(d)

    got = await registry.get_device(d.dev_eui)

    assert got is not None
    assert (got.dev_eui, got.join_eui, got.mac_version, got.hsm_group) == (
        d.dev_eui,
        d.join_eui,
        "1.1",
        "default",
    )
    assert (got.app_key_blob, got.nwk_key_blob) == (d.app_key_blob, d.nwk_key_blob)
    assert (got.home_net_id, got.astk_label, got.owner_account, got.name) == (
        d.home_net_id,
        "astk-app-1",
        "acme",
        "meter 7",
    )
    assert got.nonces == FRESH


async def test_optional_fields_default_to_none(registry: Registry) -> None:
    d = new_device()
    await registry.add_device(d)

    got = await registry.get_device(d.dev_eui)

    assert got is not None
    assert (got.nwk_key_blob, got.home_net_id, got.astk_label, got.owner_account, got.name) == (None,) * 5


async def test_unknown_device_is_none(registry: Registry) -> None:
    assert await registry.get_device(bytes(8)) is None


async def test_adding_a_dev_eui_twice_raises_device_exists(registry: Registry) -> None:
    await registry.add_device(new_device(name="first"))

    with pytest.raises(DeviceExists):
        await registry.add_device(new_device(name="second"))

    got = await registry.get_device(new_device().dev_eui)
    assert got is not None and got.name == "first"


@pytest.mark.parametrize(
    "changes",
    [
        {"dev_eui": bytes(7)},
        {"join_eui": bytes(9)},
        {"home_net_id": bytes(4)},
        {"app_key_blob": b""},
        {"mac_version": ""},
    ],
    ids=["short-dev-eui", "long-join-eui", "long-net-id", "empty-app-key", "no-mac-version"],
)
async def test_malformed_devices_are_refused_before_any_write(
    registry: Registry, changes: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await registry.add_device(new_device(**changes))
    assert await registry.count_devices() == 0


async def test_list_is_ordered_by_dev_eui_and_paged(registry: Registry) -> None:
    for n in (3, 1, 2):
        await registry.add_device(new_device(n))

    everything = await registry.list_devices()
    page = await registry.list_devices(limit=1, offset=1)

    assert [d.dev_eui[-1] for d in everything] == [1, 2, 3]
    assert [d.dev_eui[-1] for d in page] == [2]
    assert all(d.nonces == FRESH for d in everything)
    assert await registry.count_devices() == 3


async def test_home_net_id_and_astk_label_can_be_set_and_cleared(registry: Registry) -> None:
    d = new_device()
    await registry.add_device(d)

    await registry.set_home_net_id(d.dev_eui, bytes.fromhex("000013"))
    await registry.set_astk_label(d.dev_eui, "astk-1")
    set_ = await registry.get_device(d.dev_eui)
    await registry.set_home_net_id(d.dev_eui, None)
    await registry.set_astk_label(d.dev_eui, None)
    cleared = await registry.get_device(d.dev_eui)

    assert set_ is not None and (set_.home_net_id, set_.astk_label) == (bytes.fromhex("000013"), "astk-1")
    assert cleared is not None and (cleared.home_net_id, cleared.astk_label) == (None, None)
    assert cleared.nonces == dataclasses.replace(FRESH, version=4)  # each change moved the version


async def test_changing_an_unknown_device_raises_not_found(registry: Registry) -> None:
    unknown = bytes(8)
    with pytest.raises(NotFound):
        await registry.set_home_net_id(unknown, bytes(3))
    with pytest.raises(NotFound):
        await registry.set_astk_label(unknown, "x")
    with pytest.raises(NotFound):
        await registry.reset_dev_nonces(unknown)
    with pytest.raises(NotFound):
        await registry.remove_device(unknown)


async def test_remove_device_takes_its_nonces_and_session_keys_along(registry: Registry) -> None:
    d = new_device()
    await registry.add_device(d)
    state = NonceState(1, 1, 7, (7,), None, None)
    key = SessionKey("ab" * 16, d.dev_eui, "default", b"\x03" * 24, join_nonce=1, dev_nonce=7)
    await registry.commit_join(d.dev_eui, 0, state, key)

    await registry.remove_device(d.dev_eui)

    assert await registry.get_device(d.dev_eui) is None
    assert await registry.get_session_key(d.dev_eui, key.session_key_id) is None
    await registry.add_device(d)
    again = await registry.get_device(d.dev_eui)
    # Fresh nonce state, but the version continues above the deleted device's (1): it never repeats.
    assert again is not None and again.nonces == dataclasses.replace(FRESH, version=2)


async def test_bulk_add_creates_devices_with_nonce_rows(registry: Registry) -> None:
    many = (new_device(dev_eui=n.to_bytes(8, "big"), join_eui=JOIN_EUI, name=None) for n in range(1, 5_001))

    added = await registry.add_devices_bulk(many)

    assert added == 5_000
    assert await registry.count_devices() == 5_000
    last = await registry.get_device((5_000).to_bytes(8, "big"))
    assert last is not None and last.nonces == FRESH


async def test_bulk_add_with_a_duplicate_adds_nothing(registry: Registry) -> None:
    await registry.add_device(new_device(3))

    with pytest.raises(DeviceExists):
        await registry.add_devices_bulk([new_device(1), new_device(2), new_device(3)])

    assert await registry.count_devices() == 1
