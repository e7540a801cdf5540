"""Contract across processes: commits survive a new engine and a killed process, uncommitted work never
appears, and worker processes sharing one database never issue a JoinNonce twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from jsd.registry import NewDevice, NonceState, Registry, migrate

DEV_EUI = bytes.fromhex("0080000004000001")
SESSION_KEY_ID = "5e" * 16

# Runs in a separate interpreter that dies with os._exit(): no dispose, no pool reset, no atexit.
_DYING_WORKER = """
import asyncio, json, os, sys

from sqlalchemy import update

from jsd.registry import NonceState, Registry, SessionKey, create_engine
from jsd.registry.tables import device_nonces

url, dev_eui_hex, stage = json.loads(sys.argv[1])
dev_eui = bytes.fromhex(dev_eui_hex)


async def main() -> None:
    engine = create_engine(url)
    registry = Registry(engine)
    device = await registry.get_device(dev_eui)
    state = device.nonces
    new = NonceState(state.version, state.join_nonce + 1, 0x42, (*state.used_dev_nonces, 0x42), None, None)
    if stage == "after-commit":
        key = SessionKey("5e" * 16, dev_eui, "default", b"\\x07" * 24, new.join_nonce, 0x42)
        await registry.commit_join(dev_eui, state.version, new, key)
    else:
        connection = await engine.connect()
        await connection.begin()
        await connection.execute(
            update(device_nonces).where(device_nonces.c.dev_eui == dev_eui_hex).values(join_nonce=999, version=999)
        )
    print(stage, flush=True)
    os._exit(0)


asyncio.run(main())
"""


# A worker process doing what jsd.join does: read, compute, commit over the version read, retry on conflict.
_JOIN_WORKER = """
import asyncio, json, sys

from jsd.registry import NonceConflict, NonceState, Registry, SessionKey, create_engine

url, dev_eui_hex, worker, joins = json.loads(sys.argv[1])
dev_eui = bytes.fromhex(dev_eui_hex)


async def main() -> None:
    engine = create_engine(url)
    registry = Registry(engine, session_keys_kept=1_000)
    conflicts = 0
    for j in range(joins):
        dev_nonce = worker * 1_000 + j
        while True:
            state = (await registry.get_device(dev_eui)).nonces
            new = NonceState(state.version, state.join_nonce + 1, dev_nonce, (dev_nonce,), None, None)
            key = SessionKey(f"{worker:04x}{j:04x}".ljust(32, "0"), dev_eui, "default", b"\\x07" * 24,
                             new.join_nonce, dev_nonce)
            try:
                await registry.commit_join(dev_eui, state.version, new, key)
                break
            except NonceConflict:
                conflicts += 1
    await engine.dispose()
    print(conflicts)


asyncio.run(main())
"""


async def _run_dying_worker(database: Any, stage: str) -> None:
    argument = json.dumps([database.url, DEV_EUI.hex(), stage])
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _DYING_WORKER, argument],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == stage


async def _provisioned(database: Any) -> Registry:
    engine = database.engine()
    await migrate(engine)
    registry = Registry(engine)
    await registry.add_device(NewDevice(DEV_EUI, bytes(8), "1.0.2", "default", b"\x01" * 24))
    return registry


async def test_a_fresh_engine_reads_what_another_engine_wrote(database: Any) -> None:
    writer = await _provisioned(database)
    await writer.commit_join(DEV_EUI, 0, NonceState(0, 1, 9, (9,), None, None), None)
    await database.dispose()

    reader = Registry(database.engine())
    device = await reader.get_device(DEV_EUI)

    assert device is not None and device.nonces == NonceState(1, 1, 9, (9,), None, None)


async def test_a_commit_survives_the_process_being_killed_right_after(database: Any) -> None:
    await _provisioned(database)
    await database.dispose()

    await _run_dying_worker(database, "after-commit")

    reopened = Registry(database.engine())
    device = await reopened.get_device(DEV_EUI)
    assert device is not None
    assert device.nonces == NonceState(1, 1, 0x42, (0x42,), None, None)
    key = await reopened.get_session_key(DEV_EUI, SESSION_KEY_ID)
    assert key is not None and (key.join_nonce, key.dev_nonce) == (1, 0x42)


async def test_a_transaction_cut_short_by_a_crash_leaves_no_trace(database: Any) -> None:
    await _provisioned(database)
    await database.dispose()

    await _run_dying_worker(database, "before-commit")

    reopened = Registry(database.engine())
    device = await reopened.get_device(DEV_EUI)
    assert device is not None and device.nonces == NonceState(0, 0, None, (), None, None)
    await reopened.commit_join(DEV_EUI, 0, NonceState(0, 1, 5, (5,), None, None), None)
    after = await reopened.get_device(DEV_EUI)
    assert after is not None and after.nonces.version == 1


async def test_worker_processes_sharing_the_database_never_reuse_a_join_nonce(database: Any) -> None:
    registry = await _provisioned(database)
    workers, joins = 3, 30

    async def worker(w: int) -> int:
        argument = json.dumps([database.url, DEV_EUI.hex(), w, joins])
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _JOIN_WORKER, argument],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return int(done.stdout)

    await asyncio.gather(*(worker(w) for w in range(workers)))

    device = await registry.get_device(DEV_EUI)
    assert device is not None
    assert (device.nonces.version, device.nonces.join_nonce) == (workers * joins, workers * joins)
    for w in range(workers):
        for j in range(joins):
            key = await registry.get_session_key(DEV_EUI, f"{w:04x}{j:04x}".ljust(32, "0"))
            assert key is not None
