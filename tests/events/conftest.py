"""Fixtures for the MQTT tests: real Mosquitto brokers, a collecting subscriber, the real app with [mqtt] set.

The shared broker on 127.0.0.1:1883 serves the tests that need no broker restarts; each test publishes under
its own topic prefix, so tests never see each other's messages. Tests that stop the broker start their own
Mosquitto on a free port. Nothing of ours is mocked: events come from the ownership service or the LBI path.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jsd.app import OWNERSHIP, STORES
from jsd.config import Settings
from jsd.ownership import SCOPES, AccountKind, Ownership, Principal
from jsd.registry.journal import Journal

from ..daemons import daemon_settings, free_port, listening, start_app, stop_app

SHARED_BROKER = ("127.0.0.1", 1883)
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
OPERATOR = Principal("_local", AccountKind.OPERATOR, frozenset(SCOPES), None, "test")


async def until(condition: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` (sync or async) until it is truthy; fail with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Mosquitto:
    """A broker of our own on a free port (with persistence, so a restart keeps persistent sessions)."""

    directory: Path
    port: int = field(default_factory=free_port)
    conf: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start on `conf`, or on a generated anonymous config with persistence."""
        conf = self.conf
        if conf is None:
            conf = self.directory / "mosquitto.conf"
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\nuser {getpass.getuser()}\n"
                f"persistence_location {self.directory}/\nlog_dest file {self.directory}/mosquitto.log\n"
                "set_tcp_nodelay true\n"
            )
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], start_new_session=True)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            assert self.process.poll() is None, (self.directory / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file (sessions, queued QoS 1 messages) and exits."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
            self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "broker")
    broker.directory.mkdir()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    properties: Any

    @property
    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """An integrator's client: collects every message of its subscriptions in arrival order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[Received] = []

    async def collect(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.messages.append(Received(str(message.topic), payload, message.properties))

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait(self, condition: Callable[[list[Received]], Any], within: float = 10.0, what: str = "") -> Any:
        return await until(lambda: condition(self.messages), within, what or "messages")

    async def command(
        self,
        topic: str,
        body: Any,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> None:
        properties = None
        if response_topic is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.client.publish(topic, payload, qos=1, properties=properties)


@dataclass
class SubscriberFactory:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    clients: list[aiomqtt.Client] = field(default_factory=list)

    async def __call__(
        self,
        *topics: str,
        port: int = SHARED_BROKER[1],
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
        persistent_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Subscriber:
        """Connected and subscribed (QoS 1); `persistent_id`: a persistent session the broker keeps."""
        v5 = protocol == aiomqtt.ProtocolVersion.V5
        properties = None
        if persistent_id is not None and v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
        session: dict[str, Any] = (
            {"clean_start": persistent_id is None, "properties": properties}
            if v5
            else {"clean_session": persistent_id is None}
        )
        client = aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=persistent_id or f"test-{uuid.uuid4().hex[:12]}",
            protocol=protocol,
            username=username,
            password=password,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            **session,
        )
        await client.__aenter__()
        self.clients.append(client)
        for topic in topics:
            await client.subscribe(topic, qos=1)
        subscriber = Subscriber(client)
        self.tasks.append(asyncio.create_task(subscriber.collect()))
        return subscriber

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            try:
                await client.__aexit__(None, None, None)
            except aiomqtt.MqttError:
                pass


@pytest.fixture
async def subscribe() -> AsyncIterator[SubscriberFactory]:
    factory = SubscriberFactory()
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test alone."""
    return f"test-{uuid.uuid4().hex[:12]}/jsd/v1"


@dataclass
class Daemon:
    """The real application on a free port with the [mqtt] settings of the test."""

    url: str
    app: web.Application
    settings: Settings
    runner: web.AppRunner

    @property
    def service(self) -> Ownership:
        return self.app[OWNERSHIP]

    @property
    def store(self) -> Journal:
        return self.app[STORES].journal

    @property
    def operator(self) -> Principal:
        """The local operator, as ``jsd`` on the daemon's machine acts."""
        return OPERATOR

    async def until(self, condition: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
        return await until(condition, within, what)

    async def drained(self, within: float = 10.0) -> None:
        """Wait until the outbox is empty: every event acknowledged by the broker (or cleared without one)."""

        async def empty() -> bool:
            return await self.store.pending_events(1) == []

        await until(empty, within, "an empty outbox")

    async def account(self, name: str, kind: str) -> tuple[Principal, str]:
        """A new account (made by the local operator) and its API key."""
        _, key = await self.service.accounts.create_account(OPERATOR, name, kind, None)
        return await self.service.accounts.authenticate(key.key, "test"), key.key


@dataclass
class DaemonFactory:
    hsm_state: Path
    database: Any
    tmp_path: Path
    runners: list[web.AppRunner] = field(default_factory=list)

    async def __call__(self, **changes: Any) -> Daemon:
        changes.setdefault("mqtt__client_id", f"jsd-test-{uuid.uuid4().hex[:8]}")
        settings = daemon_settings(self.hsm_state, self.database.url, self.tmp_path / "state", **changes)
        app, runner, url = await start_app(settings)
        self.runners.append(runner)
        return Daemon(url, app, settings, runner)

    async def stop(self, daemon: Daemon) -> None:
        self.runners.remove(daemon.runner)
        await stop_app(daemon.runner)

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await stop_app(runner)


@pytest.fixture
async def daemon(hsm_state: Path, database: Any, tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Starts the real app with settings changes, e.g. ``await daemon(mqtt__host="127.0.0.1")``."""
    factory = DaemonFactory(hsm_state, database, tmp_path)
    try:
        yield factory
    finally:
        await factory.close()


class Proxy:
    """A TCP relay in front of a broker that can hold back the broker's answers and cut connections.

    Holding the broker-to-client direction lets a test see the broker accept a PUBLISH (its subscribers get
    it) while the publisher has not yet had the PUBACK: the state an outbox must survive.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.holding = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._released = asyncio.Event()
        self._released.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        self.holding = True
        self._released.clear()

    def cut(self) -> None:
        """Close every relayed connection (held bytes are dropped) and stop holding for new ones."""
        self.holding = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self._released.set()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, held: bool) -> None:
            try:
                while data := await src.read(65536):
                    if held:
                        await self._released.wait()
                    if dst.transport.is_closing():
                        return
                    dst.write(data)
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """A relay to the shared broker."""
    relay = Proxy(SHARED_BROKER[1])
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
