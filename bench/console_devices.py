"""How fast the console's device list answers with 100,000 devices in one account.

    python bench/console_devices.py --devices 100000 [--database-url postgresql+asyncpg://...]

Fills a throw-away SQLite file (or the given, empty and migrated-here database) with devices owned by one
subscriber (the key blobs are filler: listing never reads them), then times the queries of the console's
device list through `DeviceService.list_devices`, as the console calls it: first page, a page deep in
the keyset, DevEUI-prefix and name-prefix search, and a state filter. Prints the median of 20 runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from sqlalchemy import insert

from jsd.ownership import DEFAULT_SCOPES, AccountKind, Ownership, OwnershipPolicy, OwnershipStores, Principal
from jsd.registry import Registry, create_engine, migrate
from jsd.registry.tables import accounts, devices

PAGE = 51  # the console asks for one more than it shows, to know whether a next page exists


async def fill(engine: Any, count: int) -> list[str]:
    async with engine.begin() as conn:
        await conn.execute(insert(accounts), {"id": "bench-sub", "kind": "subscriber", "name": "bench"})
    euis = sorted(secrets.token_hex(8) for _ in range(count))
    for start in range(0, count, 5000):
        rows = [
            {
                "dev_eui": eui,
                "join_eui": "70b3d57ed0000001",
                "mac_version": "1.0.3",
                "hsm_group": "default",
                "app_key_blob": b"\0" * 40,
                "owner_account": "bench-sub",
                "name": f"sensor-{i:06d}",
                "home_net_id": "000013" if i % 3 else None,
                "manufacturer": "bench-maker",
            }  # fmt: skip
            for i, eui in enumerate(euis[start : start + 5000], start)
        ]
        async with engine.begin() as conn:
            await conn.execute(insert(devices), rows)
    return euis


async def timed(label: str, call: Any, runs: int = 20) -> None:
    times = []
    found = 0
    for _ in range(runs):
        started = time.perf_counter()
        found = len(await call())
        times.append(time.perf_counter() - started)
    print(f"{label:<32} {statistics.median(times) * 1000:8.2f} ms  ({found} rows)")


async def main(count: int, url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}")
        await migrate(engine)
        started = time.perf_counter()
        euis = await fill(engine, count)
        print(f"filled {count} devices in {time.perf_counter() - started:.1f} s")
        service = Ownership.build(OwnershipStores.on(engine), Registry(engine), cast(Any, None), OwnershipPolicy())
        p = Principal("bench-sub", AccountKind.SUBSCRIBER, DEFAULT_SCOPES[AccountKind.SUBSCRIBER], None, "bench")
        middle = bytes.fromhex(euis[count // 2])
        await timed("first page", lambda: service.devices.list_devices(p, PAGE))
        await timed("page after the middle DevEUI", lambda: service.devices.list_devices(p, PAGE, middle))
        await timed("DevEUI prefix (4 hex digits)", lambda: service.devices.list_devices(p, PAGE, search=euis[777][:4]))
        await timed("name prefix (100 matches)", lambda: service.devices.list_devices(p, PAGE, search="sensor-0424"))
        await timed("name prefix (all match)", lambda: service.devices.list_devices(p, PAGE, search="sensor"))
        await timed("state: no home NetID", lambda: service.devices.list_devices(p, PAGE, state="no_net_id"))
        await timed("state + after the middle", lambda: service.devices.list_devices(p, PAGE, middle, state="net_id_set"))
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--database-url", help="An empty database to use instead of a temporary SQLite file.")
    args = parser.parse_args()
    asyncio.run(main(args.devices, args.database_url))
