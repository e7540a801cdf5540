"""Contract: nonce state is written only over the version it was computed from."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from jsd.registry import (
    MAX_USED_DEV_NONCES,
    NewDevice,
    NonceConflict,
    NonceState,
    NotFound,
    Registry,
    RegistryError,
    SessionKey,
)

RegistryFactory = Callable[..., Awaitable[Registry]]

DEV_EUI = bytes.fromhex("0080000004000001")


def session_key(join_nonce: int, dev_nonce: int, dev_eui: bytes = DEV_EUI) -> SessionKey:
    return SessionKey(
        session_key_id=f"{join_nonce:08x}{dev_nonce:04x}".ljust(32, "0"),
        dev_eui=dev_eui,
        hsm_group="default",
        app_s_key_blob=bytes([join_nonce % 256]) * 24,
        join_nonce=join_nonce,
        dev_nonce=dev_nonce,
    )


def accepted(state: NonceState, dev_nonce: int) -> NonceState:
    """What the join layer would persist after accepting `dev_nonce` (arithmetic is not under test)."""
    return dataclasses.replace(
        state,
        join_nonce=state.join_nonce + 1,
        last_dev_nonce=dev_nonce,
        used_dev_nonces=(*state.used_dev_nonces, dev_nonce),
    )


async def provisioned(registry: Registry, dev_eui: bytes = DEV_EUI) -> NonceState:
    await registry.add_device(NewDevice(dev_eui, bytes(8), "1.0.3", "default", b"\x01" * 24))
    device = await registry.get_device(dev_eui)
    assert device is not None
    return device.nonces


async def nonces(registry: Registry, dev_eui: bytes = DEV_EUI) -> NonceState:
    device = await registry.get_device(dev_eui)
    assert device is not None
    return device.nonces


async def test_commit_join_persists_the_state_and_bumps_the_version(registry: Registry) -> None:
    before = await provisioned(registry)
    new = NonceState(
        version=before.version,
        join_nonce=1,
        last_dev_nonce=0x1234,
        used_dev_nonces=(0x0001, 0xFFFF, 0x1234),
        rj_count0=5,
        rj_count1=0,
    )
    key = session_key(1, 0x1234)

    await registry.commit_join(DEV_EUI, before.version, new, key)

    assert await nonces(registry) == dataclasses.replace(new, version=before.version + 1)
    assert await registry.get_session_key(DEV_EUI, key.session_key_id) == key


async def test_commit_join_without_a_session_key(registry: Registry) -> None:
    before = await provisioned(registry)

    await registry.commit_join(DEV_EUI, 0, accepted(before, 7), None)

    after = await nonces(registry)
    assert (after.version, after.join_nonce, after.used_dev_nonces) == (1, 1, (7,))


async def test_the_stored_version_ignores_the_version_passed_in(registry: Registry) -> None:
    before = await provisioned(registry)

    await registry.commit_join(DEV_EUI, 0, dataclasses.replace(accepted(before, 7), version=42), None)

    assert (await nonces(registry)).version == 1


async def test_a_stale_version_raises_conflict_and_changes_nothing(registry: Registry) -> None:
    first = await provisioned(registry)
    await registry.commit_join(DEV_EUI, first.version, accepted(first, 1), session_key(1, 1))
    current = await nonces(registry)
    late = session_key(2, 2)

    with pytest.raises(NonceConflict):
        await registry.commit_join(
            DEV_EUI, first.version, dataclasses.replace(accepted(current, 2), join_nonce=2), late
        )

    assert await nonces(registry) == current
    assert await registry.get_session_key(DEV_EUI, late.session_key_id) is None


async def test_a_join_nonce_that_does_not_increase_is_refused(registry: Registry) -> None:
    before = await provisioned(registry)
    await registry.commit_join(DEV_EUI, 0, accepted(before, 1), None)
    current = await nonces(registry)
    key = session_key(1, 2)

    with pytest.raises(ValueError, match="JoinNonce"):
        await registry.commit_join(
            DEV_EUI, current.version, dataclasses.replace(current, last_dev_nonce=2), key
        )

    assert await nonces(registry) == current
    assert await registry.get_session_key(DEV_EUI, key.session_key_id) is None


async def test_a_failed_session_insert_undoes_the_nonce_update(registry: Registry) -> None:
    before = await provisioned(registry)
    await registry.commit_join(DEV_EUI, 0, accepted(before, 1), session_key(1, 1))
    current = await nonces(registry)
    reused_id = dataclasses.replace(session_key(2, 2), session_key_id=session_key(1, 1).session_key_id)

    with pytest.raises(RegistryError):
        await registry.commit_join(DEV_EUI, current.version, accepted(current, 2), reused_id)

    assert await nonces(registry) == current
    assert await registry.get_session_key(DEV_EUI, reused_id.session_key_id) == session_key(1, 1)


@pytest.mark.parametrize(
    "state",
    [
        NonceState(0, 0x1000000, None, (), None, None),
        NonceState(0, 1, 0x10000, (), None, None),
        NonceState(0, 1, None, (0x10000,), None, None),
        NonceState(0, 1, None, (), -1, None),
    ],
    ids=[
        "join-nonce-over-24-bits",
        "dev-nonce-over-16-bits",
        "used-dev-nonce-over-16-bits",
        "negative-rj-count",
    ],
)
async def test_out_of_range_values_are_refused(registry: Registry, state: NonceState) -> None:
    before = await provisioned(registry)

    with pytest.raises(ValueError):
        await registry.commit_join(DEV_EUI, 0, state, None)

    assert await nonces(registry) == before


async def test_a_session_key_must_match_the_device_and_join_nonce(registry: Registry) -> None:
    before = await provisioned(registry)
    new = accepted(before, 9)

    with pytest.raises(ValueError):
        await registry.commit_join(DEV_EUI, 0, new, session_key(1, 9, dev_eui=bytes(8)))
    with pytest.raises(ValueError):
        await registry.commit_join(DEV_EUI, 0, new, session_key(2, 9))

    assert await nonces(registry) == before


async def test_commit_join_on_an_unknown_device_raises_not_found(registry: Registry) -> None:
    with pytest.raises(NotFound):
        await registry.commit_join(DEV_EUI, 0, NonceState(0, 1, 1, (1,), None, None), None)


async def test_only_the_newest_used_dev_nonces_are_kept(registry: Registry) -> None:
    before = await provisioned(registry)
    used = tuple(range(MAX_USED_DEV_NONCES + 5))

    await registry.commit_join(
        DEV_EUI, 0, dataclasses.replace(before, join_nonce=1, used_dev_nonces=used), None
    )

    assert (await nonces(registry)).used_dev_nonces == used[5:]


async def test_reset_dev_nonces_keeps_the_join_nonce(registry: Registry) -> None:
    before = await provisioned(registry)
    await registry.commit_join(
        DEV_EUI, 0, NonceState(0, 3, 10, (8, 9, 10), rj_count0=4, rj_count1=2), session_key(3, 10)
    )

    await registry.reset_dev_nonces(DEV_EUI)

    assert await nonces(registry) == NonceState(
        version=before.version + 2,
        join_nonce=3,
        last_dev_nonce=None,
        used_dev_nonces=(),
        rj_count0=None,
        rj_count1=None,
    )
    assert await registry.get_session_key(DEV_EUI, session_key(3, 10).session_key_id) is not None


async def test_a_reset_makes_an_in_flight_join_conflict(registry: Registry) -> None:
    before = await provisioned(registry)

    await registry.reset_dev_nonces(DEV_EUI)

    with pytest.raises(NonceConflict):
        await registry.commit_join(DEV_EUI, before.version, accepted(before, 1), None)


async def test_session_keys_are_found_only_for_their_device(registry: Registry) -> None:
    other = bytes.fromhex("0080000004000002")
    before = await provisioned(registry)
    await provisioned(registry, other)
    key = session_key(1, 5)
    await registry.commit_join(DEV_EUI, 0, accepted(before, 5), key)

    assert await registry.get_session_key(other, key.session_key_id) is None
    assert await registry.get_session_key(DEV_EUI, "f" * 32) is None
    assert await registry.get_session_key(DEV_EUI, key.session_key_id.upper()) == key


async def test_old_session_keys_are_pruned(make_registry: RegistryFactory) -> None:
    registry = await make_registry(session_keys_kept=3)
    state = await provisioned(registry)
    for dev_nonce in range(1, 10):
        await registry.commit_join(
            DEV_EUI, state.version, accepted(state, dev_nonce), session_key(dev_nonce, dev_nonce)
        )
        state = await nonces(registry)

    kept = [
        n for n in range(1, 10) if await registry.get_session_key(DEV_EUI, session_key(n, n).session_key_id)
    ]

    assert kept[-3:] == [7, 8, 9]
    assert 1 not in kept and len(kept) < 6


async def test_concurrent_commits_over_the_same_version_have_one_winner(
    make_registry: RegistryFactory,
) -> None:
    registries = [await make_registry(), await make_registry()]
    before = await provisioned(registries[0])

    async def attempt(i: int) -> bool:
        new = accepted(before, i)
        try:
            await registries[i % 2].commit_join(DEV_EUI, before.version, new, session_key(1, i))
        except NonceConflict:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt(i) for i in range(20)))

    assert outcomes.count(True) == 1
    winner = outcomes.index(True)
    after = await nonces(registries[1])
    assert (after.version, after.join_nonce, after.used_dev_nonces) == (1, 1, (winner,))
    stored = [
        await registries[0].get_session_key(DEV_EUI, session_key(1, i).session_key_id) for i in range(20)
    ]
    assert [k is not None for k in stored] == [i == winner for i in range(20)]


async def test_contended_joins_with_retries_never_reuse_a_join_nonce(
    make_registry: RegistryFactory,
) -> None:
    registries = [await make_registry(session_keys_kept=1_000) for _ in range(2)]
    await provisioned(registries[0])
    issued: list[int] = []

    async def worker(w: int) -> None:
        registry = registries[w % 2]
        for j in range(5):
            dev_nonce = w * 100 + j
            for _ in range(200):
                state = await nonces(registry)
                new = accepted(state, dev_nonce)
                try:
                    await registry.commit_join(
                        DEV_EUI, state.version, new, session_key(new.join_nonce, dev_nonce)
                    )
                except NonceConflict:
                    continue
                issued.append(new.join_nonce)
                break
            else:
                pytest.fail("a join kept losing the race")

    await asyncio.gather(*(worker(w) for w in range(8)))

    assert sorted(issued) == list(range(1, 41))
    final = await nonces(registries[0])
    assert (final.version, final.join_nonce, len(final.used_dev_nonces)) == (40, 40, 40)
