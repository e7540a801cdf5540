"""PostgreSQL connections killed under a closed-loop join load: what the NS gets, and what the access log says.

    python bench/db_loss.py [--seconds 15] [--workers 2] [--connections 16] [--kill-every 1.0]

One run starts ``jsd serve`` (embedded SoftHSM2 token, a fresh schema of the PostgreSQL server at ``--pg``)
behind a TCP relay of this script, so the backends serving the daemon are known exactly (by the relay's
ports) and no other session of the server is touched. Then:

1. closed loop: ``--connections`` clients join their own LoRaWAN 1.0.4 devices as fast as answers come
   back, while every ``--kill-every`` seconds all of the daemon's backends are ended (``pg_terminate_backend``);
2. idle: each device joins once (so every worker has its connections), every backend is ended while nothing
   runs, then each device joins once more;
3. database down: the relay is cut (connections closed, new ones refused) and each device joins once.

It prints the answers by HTTP status and LBI Result, and the daemon's access log lines by status and
result, for each phase: a well-behaved daemon answers HTTP 200 throughout (Result `Other` where the
database could not be used) and logs exactly what it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tcp_relay import Relay, free_port  # noqa: E402

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="admin DSN (libpq form)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kill-every", type=float, default=1.0)
    args = parser.parse_args()

    import aiohttp
    import asyncpg  # type: ignore[import-untyped]

    from jsd.app import hsm_settings
    from jsd.config import load_settings
    from jsd.hsm import Hsm
    from jsd.registry import NetworkServer, NewDevice, Registry, create_engine
    from jsd.serve import prepare
    from jsd_sim import SimDevice

    admin = await asyncpg.connect(args.pg)
    dsn = urllib.parse.urlsplit(args.pg)
    host, port = dsn.hostname or "127.0.0.1", dsn.port or 5432
    schema = f"jsd_dbloss_{secrets.token_hex(4)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    relay = Relay((host, port))
    await relay.start()
    database, user = dsn.path.lstrip("/"), dsn.username or "postgres"
    url = f"postgresql+asyncpg://{user}@127.0.0.1:{relay.port}/{database}?search_path={schema}"
    tmp = Path(tempfile.mkdtemp(prefix="jsd-dbloss-"))
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JSD_", "SOFTHSM2"))}
    env.update({
        "JSD_GENERAL_STATE_DIR": str(tmp / "state"), "JSD_DATABASE_URL": url, "JSD_SERVER_PORT": str(http_port),
        "JSD_SERVER_WORKERS": str(args.workers), "JSD_LOG_FORMAT": "json",
    })  # fmt: skip
    settings = load_settings(None, environ=env)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        await prepare(settings)
        token = secrets.token_urlsafe(16)
        engine = create_engine(url)
        registry = Registry(engine)
        hsm = await Hsm.open(hsm_settings(settings))
        sims: list[Any] = []
        try:
            await hsm.import_kek("ns-dbloss", secrets.token_bytes(16))
            await registry.add_network_server(NetworkServer(
                net_id=bytes.fromhex(HOME), name="dbloss", kek_label="ns-dbloss",
                token_hash=hashlib.sha256(token.encode()).hexdigest(), cert_fingerprint=None,
                answer_url=None, async_mode=False,
            ))  # fmt: skip
            for _ in range(args.connections * 2):
                dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
                await registry.add_device(NewDevice(
                    dev_eui=dev_eui, join_eui=bytes.fromhex(JOIN_EUI), mac_version="1.0.4", hsm_group="default",
                    app_key_blob=await hsm.import_root_key("default", app_key), nwk_key_blob=None,
                    home_net_id=bytes.fromhex(HOME), astk_label=None, owner_account=None, name=None,
                ))  # fmt: skip
                sims.append(SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.4", app_key))
        finally:
            await hsm.aclose()
            await engine.dispose()

        log_path = tmp / "daemon.log"
        with log_path.open("wb") as handle:
            daemon = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
                [sys.executable, "-m", "jsd", "serve"], env=env, stdout=handle, stderr=handle
            )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.exit("the daemon did not start:\n" + log_path.read_text())
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)

        async def kill_backends() -> int:
            rows = await admin.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE client_addr = '127.0.0.1' AND client_port = ANY($1::int[])",
                sorted(relay.upstream_ports),
            )
            return len(rows)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.connections)) as session:

            async def join(sim: Any) -> tuple[int, str]:
                body = {
                    "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 1,
                    "MessageType": "JoinReq", "MACVersion": "1.0.4", "PHYPayload": sim.join_request().hex(),
                    "DevEUI": sim.dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
                }  # fmt: skip
                try:
                    async with session.post(
                        f"http://127.0.0.1:{http_port}/", json=body, headers={"Authorization": f"Bearer {token}"}
                    ) as response:
                        raw = await response.read()
                        try:
                            result = json.loads(raw)["Result"]["ResultCode"]
                        except (ValueError, KeyError, TypeError):
                            result = "-"
                        return response.status, result
                except aiohttp.ClientError as exc:
                    return 0, type(exc).__name__

            def access_log(since: int) -> tuple[Counter[tuple[Any, Any]], int]:
                text = log_path.read_bytes()
                lines = [json.loads(line) for line in text[since:].splitlines() if line.startswith(b"{")]
                logged = Counter((e.get("status"), e.get("result")) for e in lines if e.get("msg") == "lbi JoinReq")
                return logged, len(text)

            def report(phase: str, answers: Counter[tuple[int, str]], logged: Counter[Any], extra: str = "") -> None:
                print(f"{phase}: {sum(answers.values())} joins {extra}")
                print(f"  answers (HTTP status, Result):    {dict(sorted(answers.items()))}")
                print(f"  access log (status, result):      {dict(sorted(logged.items(), key=str))}")
                print(f"  HTTP 500: {sum(n for (status, _), n in answers.items() if status == 500)}")

            # 1. Closed loop with backends killed again and again.
            answers: Counter[tuple[int, str]] = Counter()
            stop = time.monotonic() + args.seconds
            mark = log_path.stat().st_size

            async def client(mine: list[Any]) -> None:
                while time.monotonic() < stop:
                    for sim in mine:
                        answers[await join(sim)] += 1

            async def killer() -> int:
                killed = 0
                while time.monotonic() < stop:
                    await asyncio.sleep(args.kill_every)
                    killed += await kill_backends()
                return killed

            clients = [client(sims[i :: args.connections]) for i in range(args.connections)]
            *_, killed = await asyncio.gather(*clients, killer())
            await asyncio.sleep(0.5)
            logged, mark = access_log(mark)
            report("closed loop", answers, logged, f"in {args.seconds:.0f} s, {killed} backends ended")

            # 2. Idle: every backend ended while nothing runs, then one join per device.
            for sim in sims:  # every worker has its connections open again
                await join(sim)
            await asyncio.sleep(1.0)
            logged, mark = access_log(mark)
            killed = await kill_backends()
            await asyncio.sleep(0.3)
            answers = Counter([await join(sim) for sim in sims])
            await asyncio.sleep(0.3)
            logged, mark = access_log(mark)
            report("idle", answers, logged, f"after {killed} backends ended")

            # 3. Database down: the relay cut.
            relay.cut()
            started = time.monotonic()
            answers = Counter([await join(sim) for sim in sims])
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.3)
            logged, mark = access_log(mark)
            report("database down", answers, logged, f"({elapsed / len(sims) * 1000:.0f} ms per answer)")
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        relay.cut()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
