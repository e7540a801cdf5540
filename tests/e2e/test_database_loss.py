"""PostgreSQL connections lost under the daemon: never an HTTP 500, always an LBI answer, an honest access log.

The daemon runs on a schema of its own and reaches PostgreSQL through a TCP proxy of the test, so the test
terminates exactly the backends serving the proxy's connections (never another user's of the shared server).
"Really down" is the same proxy cut: every connection through it is closed and new ones are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
from aiohttp import web

from bench.tcp_relay import Relay
from jsd.app import HSM, OWNERSHIP, REGISTRY
from jsd.hsm import Hsm
from jsd.ownership import SCOPES, AccountKind, Principal
from jsd.registry import NetworkServer, NewDevice, create_engine, migrate
from jsd.registry.engine import PG_CONNECT_TIMEOUT
from jsd_sim import SimDevice

from ..daemons import daemon_settings, start_app, stop_app

PG = ("127.0.0.1", 5432)
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"
COMMAND_TIMEOUT = 1.5
LOCAL = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


async def _admin(statement: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        return list(await conn.fetch(statement, *args))
    finally:
        await conn.close()


@dataclass
class Daemon:
    """The real application on a private schema (reached through `proxy`), one NS and its devices."""

    url: str
    app: web.Application
    proxy: Relay
    schema: str = ""
    token: str = ""
    api_key: str = ""

    async def terminate_backends(self) -> int:
        """End every PostgreSQL backend serving this daemon (the ones behind the proxy's connections)."""
        rows = await _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE client_addr = '127.0.0.1' AND client_port = ANY($1::int[])",
            sorted(self.proxy.upstream_ports),
        )
        return len(rows)

    async def stored_join_nonce(self, device: SimDevice) -> int:
        """The device's JoinNonce as the database holds it (read directly, not through the daemon)."""
        rows = await _admin(
            f"SELECT join_nonce FROM {self.schema}.device_nonces WHERE dev_eui = $1", device.dev_eui.hex()
        )
        return int(rows[0][0])

    async def device(self) -> SimDevice:
        hsm: Hsm = self.app[HSM]
        dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
        await self.app[REGISTRY].add_device(
            NewDevice(
                dev_eui=dev_eui, join_eui=bytes.fromhex(JOIN_EUI), mac_version="1.0.4", hsm_group="default",
                app_key_blob=await hsm.import_root_key("default", app_key), nwk_key_blob=None,
                home_net_id=bytes.fromhex(HOME), astk_label=None, owner_account=None, name=None,
            )
        )  # fmt: skip
        return SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.4", app_key)

    async def join(self, session: aiohttp.ClientSession, device: SimDevice) -> tuple[int, dict[str, Any]]:
        body = {
            "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI,
            "TransactionID": secrets.randbelow(2**32), "MessageType": "JoinReq", "MACVersion": "1.0.4",
            "PHYPayload": device.join_request().hex(), "DevEUI": device.dev_eui.hex(), "DevAddr": "26011bda",
            "DLSettings": "00", "RxDelay": 1,
        }  # fmt: skip
        async with session.post(
            self.url + "/", json=body, headers={"Authorization": f"Bearer {self.token}"}
        ) as response:
            answer = await response.json(content_type=None) if response.status != 500 else {}
            if response.status == 200 and answer.get("Result", {}).get("ResultCode") == "Success":
                device.accept(bytes.fromhex(answer["PHYPayload"]))
            return response.status, answer


@pytest.fixture
async def daemon(hsm_state: Path, tmp_path: Path) -> AsyncIterator[Daemon]:
    async with running(hsm_state, tmp_path) as d:
        yield d


@pytest.fixture
async def impatient(hsm_state: Path, tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon whose statements time out after `COMMAND_TIMEOUT` seconds."""
    async with running(hsm_state, tmp_path, database__command_timeout=COMMAND_TIMEOUT) as d:
        yield d


@contextlib.asynccontextmanager
async def running(hsm_state: Path, tmp_path: Path, **changes: Any) -> AsyncIterator[Daemon]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE SCHEMA {schema}")
    proxy = Relay(PG)
    await proxy.start()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test?search_path={schema}"
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()
    app, runner, base = await start_app(daemon_settings(hsm_state, url, tmp_path / "state", **changes))
    d = Daemon(base.rstrip("/"), app, proxy, schema)
    d.token = secrets.token_urlsafe(16)
    label = f"ns-{uuid.uuid4().hex[:8]}"
    await app[HSM].import_kek(label, secrets.token_bytes(16))
    await app[REGISTRY].add_network_server(
        NetworkServer(
            net_id=bytes.fromhex(HOME), name="home", kek_label=label,
            token_hash=hashlib.sha256(d.token.encode()).hexdigest(), cert_fingerprint=None,
            answer_url=None, async_mode=False,
        )
    )  # fmt: skip
    _, key = await app[OWNERSHIP].accounts.create_account(LOCAL, "admin", "operator", None)
    d.api_key = key.key
    try:
        yield d
    finally:
        await stop_app(runner)
        proxy.cut()
        await _admin(f"DROP SCHEMA {schema} CASCADE")


async def test_terminated_backends_idle_then_under_load_never_give_500(daemon: Daemon) -> None:
    devices = [await daemon.device() for _ in range(12)]
    async with aiohttp.ClientSession() as session:
        for device in devices:
            assert (await daemon.join(session, device))[1]["Result"]["ResultCode"] == "Success"

        # Idle: the kept hot-path connections and the pooled ones all died while nobody used them.
        assert await daemon.terminate_backends() > 0
        await asyncio.sleep(0.2)
        for device in devices:
            status, answer = await daemon.join(session, device)
            assert (status, answer.get("Result", {}).get("ResultCode")) == (200, "Success"), answer
        reply = await session.get(daemon.url + "/api/v1/devices", headers={"Authorization": f"Bearer {daemon.api_key}"})
        assert reply.status == 200

        # Under a closed-loop load: backends terminated again and again while joins are in flight.
        outcomes: Counter[tuple[int, str]] = Counter()
        stop = time.monotonic() + 3.0

        async def client(device: SimDevice) -> None:
            while time.monotonic() < stop:
                status, answer = await daemon.join(session, device)
                outcomes[status, answer.get("Result", {}).get("ResultCode", "-")] += 1

        async def killer() -> int:
            killed = 0
            while time.monotonic() < stop - 0.3:
                await asyncio.sleep(0.25)
                killed += await daemon.terminate_backends()
            return killed

        *_, killed = await asyncio.gather(*(client(d) for d in devices), killer())
        print(f"terminated {killed} backends under load: {dict(outcomes)}")
        assert killed >= 5
        assert {status for status, _ in outcomes} == {200}, outcomes
        assert set(outcomes) <= {(200, "Success"), (200, "Other")}, outcomes
        # `Other` only for joins whose write was in flight on a terminated connection (outcome unknown).
        assert outcomes[200, "Success"] > 2 * outcomes[200, "Other"], outcomes

        # Afterwards every device joins again, each with a JoinNonce above any it was given before.
        for device in devices:
            before = device.last_join_nonce
            status, answer = await daemon.join(session, device)
            assert (status, answer.get("Result", {}).get("ResultCode")) == (200, "Success"), answer
            assert device.last_join_nonce is not None and before is not None and device.last_join_nonce > before


async def test_database_down_gives_lbi_answers_and_503_and_logs_what_was_sent(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    device = await daemon.device()
    async with aiohttp.ClientSession() as session:
        assert (await daemon.join(session, device))[1]["Result"]["ResultCode"] == "Success"
        daemon.proxy.cut()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                started = time.monotonic()
                status, answer = await daemon.join(session, device)
                assert time.monotonic() - started < 4.0  # an NS gives up after 5 s
                assert status == 200, answer
                assert answer["MessageType"] == "JoinAns" and answer["ReceiverID"] == HOME
                assert answer["Result"]["ResultCode"] == "Other"
                assert "unavailable" in answer["Result"]["Description"]
                assert "PHYPayload" not in answer
            api = await session.get(
                daemon.url + "/api/v1/devices", headers={"Authorization": f"Bearer {daemon.api_key}"}
            )
            problem = await api.json(content_type=None)
            assert api.status == 503 and api.content_type == "application/problem+json"
            assert problem["type"] == "urn:jsd:problem:database-unavailable" and api.headers["Retry-After"]
        access = [r for r in caplog.records if r.name == "jsd.lbi" and r.getMessage() == "lbi JoinReq"]
        assert [(r.status, r.result) for r in access] == [(200, "Other")] * 3  # type: ignore[attr-defined]

        await daemon.proxy.start()
        status, answer = await daemon.join(session, device)
        assert (status, answer["Result"]["ResultCode"]) == (200, "Success"), answer


async def test_a_silent_partition_fails_calls_in_bounded_time_and_heals_by_itself(impatient: Daemon) -> None:
    """The path to PostgreSQL drops every packet (the proxy holds all bytes back; no socket is closed) while
    joins are in flight: each is answered Other, a REST call gets 503, within the command timeout (or the
    connect timeout) and a margin, never 500. When the path heals the daemon serves again without help, and no
    JoinNonce is given twice."""
    daemon = impatient
    devices = [await daemon.device() for _ in range(6)]
    given: dict[bytes, list[int]] = {device.dev_eui: [] for device in devices}
    bound = max(COMMAND_TIMEOUT, PG_CONNECT_TIMEOUT) + 1.0  # an NS gives up after 5 s
    outcomes: Counter[tuple[int, str]] = Counter()
    slowest = 0.0
    headers = {"Authorization": f"Bearer {daemon.api_key}"}
    async with aiohttp.ClientSession() as session:

        async def join(device: SimDevice) -> str:
            nonlocal slowest
            started = time.monotonic()
            status, answer = await daemon.join(session, device)  # the device refuses a JoinNonce not above its last
            slowest = max(slowest, time.monotonic() - started)
            code = answer.get("Result", {}).get("ResultCode", "-")
            outcomes[status, code] += 1
            if code == "Success":
                assert device.last_join_nonce is not None
                given[device.dev_eui].append(device.last_join_nonce)
            return code

        async def client(device: SimDevice, stop: float) -> None:
            while time.monotonic() < stop:
                await join(device)

        for device in devices:
            assert await join(device) == "Success"
        assert (await session.get(daemon.url + "/api/v1/devices", headers=headers)).status == 200

        stop = time.monotonic() + 9.0
        load = asyncio.gather(*(client(device, stop) for device in devices))
        await asyncio.sleep(0.5)
        daemon.proxy.freeze()
        frozen_at = time.monotonic()
        before = outcomes.copy()
        started = time.monotonic()
        api = await session.get(daemon.url + "/api/v1/devices", headers=headers)
        api_took = time.monotonic() - started
        problem = await api.json(content_type=None)
        await asyncio.sleep(7.0 - (time.monotonic() - frozen_at))
        during = outcomes - before
        daemon.proxy.thaw()
        await load
        print(f"partition: {dict(during)} while frozen, {dict(outcomes)} in all; slowest answer {slowest:.2f} s")

        assert (api.status, problem["type"]) == (503, "urn:jsd:problem:database-unavailable"), problem
        assert api_took < bound, api_took
        assert during[200, "Other"] >= len(devices), during
        assert {status for status, _ in outcomes} == {200}, outcomes
        assert set(outcomes) <= {(200, "Success"), (200, "Other")}, outcomes
        assert slowest < bound, slowest

        # Healed: every device joins at once, above every JoinNonce it was given and above what is stored
        # (a write that timed out may have committed after all).
        for device in devices:
            stored = await daemon.stored_join_nonce(device)
            assert await join(device) == "Success"
            nonces = given[device.dev_eui]
            assert nonces == sorted(set(nonces)), nonces
            assert nonces[-1] > stored >= nonces[-2], (nonces, stored)
            assert await daemon.stored_join_nonce(device) == nonces[-1]
        assert (await session.get(daemon.url + "/api/v1/devices", headers=headers)).status == 200


async def test_a_write_that_timed_out_can_still_land_and_its_join_nonce_is_not_given_again(
    impatient: Daemon,
) -> None:
    """A JoinReq whose write outlives the command timeout (its row is locked by another session) is answered
    Other and not retried; the server carries the write out once the lock goes, so the next join of the device
    must get a JoinNonce above that stored one, although the NS never saw it."""
    daemon = impatient
    device = await daemon.device()
    async with aiohttp.ClientSession() as session:
        assert (await daemon.join(session, device))[1]["Result"]["ResultCode"] == "Success"
        first = await daemon.stored_join_nonce(device)
        locker = await asyncpg.connect(ADMIN_DSN)
        try:
            async with locker.transaction():
                await locker.execute(
                    f"SELECT 1 FROM {daemon.schema}.device_nonces WHERE dev_eui = $1 FOR UPDATE", device.dev_eui.hex()
                )
                started = time.monotonic()
                status, answer = await daemon.join(session, device)
                took = time.monotonic() - started
                assert (status, answer["Result"]["ResultCode"]) == (200, "Other"), answer
                assert "unavailable" in answer["Result"]["Description"]
                assert COMMAND_TIMEOUT <= took < COMMAND_TIMEOUT + 1.0, took
                assert await daemon.stored_join_nonce(device) == first  # still waiting for the lock
        finally:
            await locker.close()
        deadline = time.monotonic() + 5
        while (landed := await daemon.stored_join_nonce(device)) == first:
            assert time.monotonic() < deadline, "the timed-out write never landed"
            await asyncio.sleep(0.05)
        status, answer = await daemon.join(session, device)
        assert (status, answer["Result"]["ResultCode"]) == (200, "Success"), answer
        assert device.last_join_nonce is not None and device.last_join_nonce > landed > first


async def test_the_url_names_the_daemon_sessions() -> None:
    """`application_name` in the URL goes to the server (asyncpg takes no such argument); default `jsd`."""
    named = f"jsd-test-{uuid.uuid4().hex[:8]}"
    for url, expected in ((f"{PG_URL}?application_name={named}", named), (PG_URL, "jsd")):
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                assert (await conn.exec_driver_sql("SHOW application_name")).scalar() == expected
        finally:
            await engine.dispose()


async def test_the_events_lease_is_dropped_with_the_database_and_taken_again(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox worker of this instance stops when its lease session is cut, and resumes when it is back."""

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records if r.name == "jsd.events")

    async def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="jsd.events"):
        await asyncio.sleep(0.5)  # the lease was taken at start-up (before this test could capture the log)
        daemon.proxy.cut()
        await until(lambda: said("the publisher lease was lost") == 1, "the lease to be dropped")
        await until(lambda: said("cannot take the publisher lease") == 1, "a failed attempt to take it again")
        await asyncio.sleep(2.5)
        assert said("cannot take the publisher lease") == 1, "one warning per outage"
        assert said("standing by") == 0, "nobody else holds it: the database is away"
        await daemon.proxy.start()
        await until(lambda: said("this instance publishes") == 1, "the lease to be taken again")
