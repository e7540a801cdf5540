"""Asynchronous answers are retried with doubling pauses inside their budget, and every failure names its ids.

The NS's answer listener is a real HTTP server started by the test: it refuses, stalls, is down and comes up.
The daemon is the real application on a free port with a short budget, so giving up is observable quickly.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jsd_sim import SimDevice

HOME = "000013"
JOIN_EUI = "70b3d57ed0000001"
BUDGET = 2.0
ATTEMPT_TIMEOUT = 0.5

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.fixture
def jsd_settings() -> dict[str, Any]:
    return {"lbi__answer_timeout": BUDGET, "lbi__answer_attempt_timeout": ATTEMPT_TIMEOUT}


class Listener:
    """The NS's answer listener: `behaviour(n)` decides the n-th answer (1-based); arrivals are timed."""

    def __init__(self, port: int, behaviour: Callable[[int], Awaitable[web.Response]]) -> None:
        self.port = port
        self.behaviour = behaviour
        self.calls: list[tuple[float, dict[str, Any]]] = []
        self.delivered: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((time.monotonic(), body))
        response = await self.behaviour(len(self.calls))
        if response.status < 300:
            await self.delivered.put(body)
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/lbi", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def ok(_: int) -> web.Response:
    return web.Response(status=200)


async def async_join(server: Any, port: int) -> tuple[dict[str, Any], SimDevice]:
    """Register an async NS answering on `port` and a device; send one JoinReq; the request sent."""
    kek, token = secrets.token_bytes(16), secrets.token_urlsafe(16)
    await server.add_network_server(HOME, kek, token, answer_url=f"http://127.0.0.1:{port}/lbi", async_mode=True)
    dev_eui, app_key = secrets.token_bytes(8), secrets.token_bytes(16)
    await server.add_device(dev_eui.hex(), JOIN_EUI, "1.0.3", app_key, None, HOME, secrets.token_bytes(16))
    device = SimDevice(dev_eui, bytes.fromhex(JOIN_EUI), "1.0.3", app_key)
    request = {
        "ProtocolVersion": "1.0", "SenderID": HOME, "ReceiverID": JOIN_EUI, "TransactionID": 31337,
        "MessageType": "JoinReq", "MACVersion": "1.0.3", "PHYPayload": device.join_request().hex(),
        "DevEUI": dev_eui.hex(), "DevAddr": "26011bda", "DLSettings": "00", "RxDelay": 1,
    }
    async with aiohttp.ClientSession() as client:
        async with client.post(server.url, json=request, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 202
    return request, device


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivery_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jsd.lbi" and "async answer" in r.getMessage()]


def assert_ids(record: logging.LogRecord, request: dict[str, Any]) -> None:
    assert getattr(record, "transaction_id", None) == request["TransactionID"], record.__dict__
    assert getattr(record, "dev_eui", None) == request["DevEUI"], record.__dict__


async def test_an_answer_refused_twice_is_delivered_at_the_third_attempt(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse_twice(n: int) -> web.Response:
        return web.Response(status=500 if n <= 2 else 200)

    listener = Listener(free_port(), refuse_twice)
    await listener.start()
    try:
        request, device = await async_join(jsd_server, listener.port)
        answer = await asyncio.wait_for(listener.delivered.get(), BUDGET + 2)
    finally:
        await listener.stop()
    assert answer["TransactionID"] == request["TransactionID"] and answer["Result"]["ResultCode"] == "Success"
    device.accept(bytes.fromhex(answer["PHYPayload"]))
    assert len(listener.calls) == 3
    first, second, third = (t for t, _ in listener.calls)
    assert second - first >= 0.09 and third - second >= 0.19  # pauses of 0.1 s, then 0.2 s
    failures = [r for r in delivery_records(caplog) if r.levelno == logging.WARNING]
    assert len(failures) == 2 and all("HTTP 500" in r.getMessage() for r in failures)
    for record in delivery_records(caplog):
        assert_ids(record, request)


async def test_a_listener_that_is_down_then_comes_up_gets_the_answer(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener(free_port(), ok)
    request, _ = await async_join(jsd_server, listener.port)
    await asyncio.sleep(0.5)
    await listener.start()
    try:
        answer = await asyncio.wait_for(listener.delivered.get(), BUDGET + 2)
    finally:
        await listener.stop()
    assert answer["TransactionID"] == request["TransactionID"]
    failures = [r for r in delivery_records(caplog) if r.levelno == logging.WARNING]
    assert failures and all("ClientConnectorError" in r.getMessage() for r in failures)
    for record in failures:
        assert_ids(record, request)


async def test_a_stalled_attempt_is_abandoned_and_retried(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def stall_once(n: int) -> web.Response:
        if n == 1:
            await asyncio.sleep(ATTEMPT_TIMEOUT * 4)
        return web.Response(status=200)

    listener = Listener(free_port(), stall_once)
    await listener.start()
    try:
        request, _ = await async_join(jsd_server, listener.port)
        answer = await asyncio.wait_for(listener.delivered.get(), BUDGET + 2)
    finally:
        await listener.stop()
    assert answer["TransactionID"] == request["TransactionID"]
    (first, _), (second, _) = listener.calls[:2]
    assert ATTEMPT_TIMEOUT <= second - first < ATTEMPT_TIMEOUT * 4
    failures = [r for r in delivery_records(caplog) if r.levelno == logging.WARNING]
    assert len(failures) == 1 and "TimeoutError" in failures[0].getMessage()
    assert_ids(failures[0], request)


async def test_delivery_gives_up_when_the_budget_is_spent(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def always_503(_: int) -> web.Response:
        return web.Response(status=503)

    listener = Listener(free_port(), always_503)
    await listener.start()
    try:
        request, _ = await async_join(jsd_server, listener.port)
        started = time.monotonic()
        while not [r for r in delivery_records(caplog) if r.levelno == logging.ERROR]:
            assert time.monotonic() - started < BUDGET + 3, "delivery was not given up"
            await asyncio.sleep(0.05)
    finally:
        await listener.stop()
    assert 3 <= len(listener.calls) <= 6  # 0.1 + 0.2 + 0.4 + 0.8 s of pauses fit in 2 s
    assert listener.calls[-1][0] - listener.calls[0][0] <= BUDGET
    (gave_up,) = [r for r in delivery_records(caplog) if r.levelno == logging.ERROR]
    assert f"after {len(listener.calls)} attempt(s)" in gave_up.getMessage() and "HTTP 503" in gave_up.getMessage()
    assert_ids(gave_up, request)


async def test_an_answer_the_ns_rejects_as_malformed_is_not_sent_again(
    jsd_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def reject(_: int) -> web.Response:
        return web.Response(status=400)

    listener = Listener(free_port(), reject)
    await listener.start()
    try:
        request, _ = await async_join(jsd_server, listener.port)
        started = time.monotonic()
        while not [r for r in delivery_records(caplog) if r.levelno == logging.ERROR]:
            assert time.monotonic() - started < BUDGET + 3
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    finally:
        await listener.stop()
    assert len(listener.calls) == 1
    (gave_up,) = [r for r in delivery_records(caplog) if r.levelno == logging.ERROR]
    assert "HTTP 400" in gave_up.getMessage()
    assert_ids(gave_up, request)
