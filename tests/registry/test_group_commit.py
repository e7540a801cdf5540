"""Contract of group commit: concurrent `commit_join` calls share transactions, yet each keeps its own guard,
its own outcome and its own durability."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from jsd.registry import (
    NewDevice,
    NonceConflict,
    NonceState,
    NotFound,
    Registry,
    RegistryError,
    SessionKey,
    Unavailable,
)

RegistryFactory = Callable[..., Awaitable[Registry]]


def eui(n: int) -> bytes:
    return bytes.fromhex("00800000050000") + bytes([n])


def key(dev_eui: bytes, join_nonce: int, tag: int = 0) -> SessionKey:
    return SessionKey(
        session_key_id=f"{dev_eui.hex()}{join_nonce:06x}{tag:02x}".ljust(32, "0"),
        dev_eui=dev_eui,
        hsm_group="default",
        app_s_key_blob=bytes([join_nonce % 256]) * 24,
        join_nonce=join_nonce,
        dev_nonce=join_nonce,
    )


def next_state(state: NonceState) -> NonceState:
    n = state.join_nonce + 1
    return dataclasses.replace(state, join_nonce=n, last_dev_nonce=n, used_dev_nonces=(*state.used_dev_nonces, n))


async def provision(registry: Registry, count: int) -> list[NonceState]:
    await registry.add_devices_bulk(NewDevice(eui(i), bytes(8), "1.0.3", "default", b"\x01" * 24) for i in range(count))
    return [await state_of(registry, eui(i)) for i in range(count)]


async def state_of(registry: Registry, dev_eui: bytes) -> NonceState:
    device = await registry.get_device(dev_eui)
    assert device is not None
    return device.nonces


async def outcomes(calls: list[Awaitable[None]]) -> list[BaseException | None]:
    """Run the calls concurrently: the first one is written alone and the others queue up behind it."""
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_concurrent_commits_share_transactions_and_all_succeed(registry: Registry) -> None:
    states = await provision(registry, 40)
    before = registry.write_stats

    results = await outcomes(
        [registry.commit_join(eui(i), s.version, next_state(s), key(eui(i), 1)) for i, s in enumerate(states)]
    )

    assert results == [None] * 40
    after = registry.write_stats
    assert after.calls - before.calls == 40
    assert after.transactions - before.transactions == 2  # the first call alone, then the 39 queued ones
    assert after.largest_batch == 39
    for i in range(40):
        assert (await state_of(registry, eui(i))).join_nonce == 1
        assert await registry.get_session_key(eui(i), key(eui(i), 1).session_key_id) == key(eui(i), 1)


async def test_refused_calls_fail_alone_and_the_rest_of_their_batch_commits(registry: Registry) -> None:
    states = await provision(registry, 6)
    stale, low_nonce, unknown = 2, 3, eui(99)
    calls = []
    for i, s in enumerate(states):
        new = next_state(s)
        if i == low_nonce:
            new = dataclasses.replace(new, join_nonce=s.join_nonce)
        calls.append(registry.commit_join(eui(i), s.version + (i == stale), new, None))
    calls.append(registry.commit_join(unknown, 0, NonceState(0, 1, 1, (1,), None, None), None))
    before = registry.write_stats

    results = await outcomes(calls)

    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "NonceConflict",
        "ValueError",
        "NoneType",
        "NoneType",
        "NotFound",
    ]
    assert isinstance(results[stale], NonceConflict) and isinstance(results[-1], NotFound)
    assert registry.write_stats.transactions - before.transactions == 2
    for i, s in enumerate(states):
        expected = s if i in (stale, low_nonce) else dataclasses.replace(next_state(s), version=s.version + 1)
        assert await state_of(registry, eui(i)) == expected


async def test_a_session_key_is_written_only_with_its_own_update(registry: Registry) -> None:
    states = await provision(registry, 3)

    results = await outcomes(
        [
            registry.commit_join(eui(i), s.version + (i == 1), next_state(s), key(eui(i), 1))
            for i, s in enumerate(states)
        ]
    )

    assert isinstance(results[1], NonceConflict)
    assert await registry.get_session_key(eui(1), key(eui(1), 1).session_key_id) is None
    assert await registry.get_session_key(eui(2), key(eui(2), 1).session_key_id) is not None


async def test_a_duplicate_session_key_id_fails_its_call_alone_and_persists_nothing_of_it(registry: Registry) -> None:
    states = await provision(registry, 8)
    taken = key(eui(0), 1)
    await registry.commit_join(eui(0), states[0].version, next_state(states[0]), taken)
    states[0] = await state_of(registry, eui(0))
    clash_with_stored, clash_in_batch = 3, (5, 6)
    calls = []
    for i, s in enumerate(states):
        k = key(eui(i), s.join_nonce + 1)
        if i == clash_with_stored:
            k = dataclasses.replace(k, session_key_id=taken.session_key_id)
        if i in clash_in_batch:
            k = dataclasses.replace(k, session_key_id="c1" * 16)
        calls.append(registry.commit_join(eui(i), s.version, next_state(s), k))

    results = await outcomes(calls)

    failed = [i for i, r in enumerate(results) if r is not None]
    assert all(isinstance(results[i], RegistryError) for i in failed)
    assert clash_with_stored in failed and len(failed) == 2  # one of the two sharing an ID wins
    assert [i in failed for i in clash_in_batch].count(True) == 1
    for i, s in enumerate(states):
        after = await state_of(registry, eui(i))
        assert after == (s if i in failed else dataclasses.replace(next_state(s), version=s.version + 1))
    assert await registry.get_session_key(eui(0), taken.session_key_id) == taken
    assert await registry.get_session_key(eui(clash_with_stored), taken.session_key_id) is None
    winner = next(i for i in clash_in_batch if i not in failed)
    stored = await registry.get_session_key(eui(winner), "c1" * 16)
    assert stored is not None and stored.dev_eui == eui(winner)


async def _make_updates_of_device_fail(database: Any, dev_eui: bytes) -> None:
    """A trigger that makes the database itself refuse a statement: the whole transaction fails."""
    hex_eui = dev_eui.hex()
    async with database.engine().begin() as conn:
        if database.backend == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON device_nonces "
                    f"WHEN NEW.dev_eui = '{hex_eui}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN IF NEW.dev_eui = '{hex_eui}' THEN RAISE EXCEPTION 'refused by test'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text("CREATE TRIGGER refuse BEFORE UPDATE ON device_nonces FOR EACH ROW EXECUTE FUNCTION refuse()")
            )


async def test_a_failed_transaction_fails_every_call_in_it_and_writes_nothing(
    database: Any, registry: Registry
) -> None:
    states = await provision(registry, 6)
    await _make_updates_of_device_fail(database, eui(4))
    first = registry.commit_join(eui(0), states[0].version, next_state(states[0]), key(eui(0), 1))
    batch = [registry.commit_join(eui(i), s.version, next_state(s), key(eui(i), 1)) for i, s in enumerate(states) if i]

    results = await outcomes([first, *batch])

    assert results[0] is None
    assert all(isinstance(r, RegistryError) and "refused by test" in str(r) for r in results[1:])
    assert await state_of(registry, eui(0)) == dataclasses.replace(next_state(states[0]), version=1)
    for i in range(1, 6):
        assert await state_of(registry, eui(i)) == states[i]
        assert await registry.get_session_key(eui(i), key(eui(i), 1).session_key_id) is None
    again = await state_of(registry, eui(1))
    await registry.commit_join(eui(1), again.version, next_state(again), None)  # a fresh connection works
    assert (await state_of(registry, eui(1))).version == 1


async def test_several_registries_on_one_database_commit_concurrently(make_registry: RegistryFactory) -> None:
    registries = [await make_registry(), await make_registry()]
    states = await provision(registries[0], 30)

    results = await outcomes(
        [registries[i % 2].commit_join(eui(i), s.version, next_state(s), key(eui(i), 1)) for i, s in enumerate(states)]
    )

    assert results == [None] * 30
    assert sum(r.write_stats.transactions for r in registries) < 30
    assert [(await state_of(registries[1], eui(i))).join_nonce for i in range(30)] == [1] * 30


async def test_a_registry_takes_no_connection_after_its_engine_is_disposed(database: Any) -> None:
    """The dispose is its owner's last word (the daemon stopping): a call still arriving fails as Unavailable
    instead of opening a connection that nobody would close; a new Registry on the engine works."""
    engine = database.engine()
    from jsd.registry import migrate

    await migrate(engine)
    registry = Registry(engine)
    states = await provision(registry, 2)
    await registry.commit_join(eui(0), 0, next_state(states[0]), None)

    await engine.dispose()

    with pytest.raises(Unavailable):
        await registry.commit_join(eui(1), 0, next_state(states[1]), None)
    with pytest.raises(Unavailable):
        await registry.get_device(eui(0))
    fresh = Registry(engine)
    assert [(await state_of(fresh, eui(i))).version for i in range(2)] == [1, 0]
    await engine.dispose()


# A process that commits many joins concurrently and dies with os._exit() as soon as ten have returned,
# while the others are still in flight: no dispose, no pool reset, no atexit.
_DYING_GROUP = """
import asyncio, json, os, sys

from jsd.registry import NonceState, Registry, SessionKey, create_engine

url, count = json.loads(sys.argv[1])


def eui(n):
    return bytes.fromhex("00800000050000") + bytes([n])


async def main():
    registry = Registry(create_engine(url))
    returned = 0

    async def join(i):
        nonlocal returned
        state = (await registry.get_device(eui(i))).nonces
        new = NonceState(state.version, state.join_nonce + 1, 7, (7,), None, None)
        key = SessionKey(f"{i:02x}".ljust(32, "0"), eui(i), "default", bytes(24), new.join_nonce, 7)
        await registry.commit_join(eui(i), state.version, new, key)
        print(i, flush=True)
        returned += 1
        if returned == 10:
            os._exit(0)

    await asyncio.gather(*(join(i) for i in range(count)))


asyncio.run(main())
"""


async def test_every_commit_that_returned_survives_the_process_being_killed(
    database: Any, make_registry: RegistryFactory
) -> None:
    await provision(await make_registry(), 60)
    await database.dispose()

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _DYING_GROUP, json.dumps([database.url, 60])],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    returned = [int(line) for line in done.stdout.split()]
    assert len(returned) >= 10
    reopened = await make_registry()
    for i in returned:
        assert await state_of(reopened, eui(i)) == NonceState(1, 1, 7, (7,), None, None)
        stored = await reopened.get_session_key(eui(i), f"{i:02x}".ljust(32, "0"))
        assert stored is not None and stored.join_nonce == 1
    for i in set(range(60)) - set(returned):  # cut short: either fully written or not at all
        state = await state_of(reopened, eui(i))
        stored = await reopened.get_session_key(eui(i), f"{i:02x}".ljust(32, "0"))
        assert (state.version, stored is not None) in ((0, False), (1, True))


@pytest.mark.parametrize("registries", [1, 2])
async def test_many_joins_per_device_never_reuse_a_join_nonce(make_registry: RegistryFactory, registries: int) -> None:
    pool = [await make_registry(session_keys_kept=1_000) for _ in range(registries)]
    await provision(pool[0], 4)
    issued: dict[bytes, list[int]] = {eui(i): [] for i in range(4)}

    async def joiner(w: int) -> None:
        registry, dev_eui = pool[w % registries], eui(w % 4)
        for _ in range(10):
            while True:
                state = await state_of(registry, dev_eui)
                new = next_state(state)
                try:
                    await registry.commit_join(dev_eui, state.version, new, key(dev_eui, new.join_nonce, w))
                except NonceConflict:
                    continue
                issued[dev_eui].append(new.join_nonce)
                break

    await asyncio.gather(*(joiner(w) for w in range(12)))

    for dev_eui, nonces in issued.items():
        assert sorted(nonces) == list(range(1, 31)), dev_eui.hex()
