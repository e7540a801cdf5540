"""The MQTT side of the daemon: drains the outbox to the broker and serves the command topics.

One connection does both. Events go out in seq order with QoS 1, a batch at a time (pipelined on the one
connection, so the broker receives them in order), and their outbox rows are deleted only after every PUBACK
of the batch came back. A batch that fails halfway is sent again whole after reconnecting: subscribers may
see an event twice (de-duplicate by `event_id`), never out of order for a device after de-duplication, and
never miss one. While the broker is away the connection is retried with doubling waits; the events wait in
the outbox. On MQTT 5 a PUBACK whose reason code refuses the message (an ACL) counts as not delivered.

Exactly one process runs this (see ``jsd.serve``), and of several instances on one database only the one that
holds the events lease (see ``jsd.events.running``): two publishers would send the same rows twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from jsd import metrics
from jsd.config import ConfigError, Settings
from jsd.events.commands import Command, CommandHandler, Reply
from jsd.events.outbox import Outbox, Outgoing
from jsd.events.topics import Topics

__all__ = ["BATCH", "MqttConfig", "Publisher", "keep_without_broker"]

log = logging.getLogger("jsd.events")

BATCH = 100
# Without it, Nagle's algorithm and the broker's delayed ACKs hold each reply and PUBACK ~40 ms (measured 88 ms
# per command round trip on loopback, 1 ms with it on both ends).
_NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class MqttConfig:
    """The [mqtt] settings, with the password read from its file (never from the settings themselves).

    No defaults here: `from_settings` is the only maker, and the defaults live once, in jsd.config."""

    host: str
    port: int
    protocol: str
    username: str | None
    password: str | None
    tls: bool
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    client_id: str
    keepalive: int
    retry_min: float
    retry_max: float
    poll_interval: float

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttConfig | None:
        """None when no broker is configured."""

        def get(name: str) -> Any:
            return settings.get("mqtt", name)

        if not get("host"):
            return None
        password = None
        if get("password_file"):
            try:
                password = Path(get("password_file")).read_text().splitlines()[0]
            except (OSError, IndexError):
                raise ConfigError(f"mqtt.password_file {get('password_file')}: cannot read a password") from None
        return cls(
            host=get("host"),
            port=get("port"),
            protocol=get("protocol"),
            username=get("username") or None,
            password=password,
            tls=bool(get("tls") or get("tls_ca") or get("tls_cert")),
            tls_ca=get("tls_ca") or None,
            tls_cert=get("tls_cert") or None,
            tls_key=get("tls_key") or None,
            client_id=get("client_id") or default_client_id(),
            keepalive=get("keepalive"),
            retry_min=get("retry_min"),
            retry_max=get("retry_max"),
            poll_interval=get("poll_interval"),
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


def default_client_id() -> str:
    """`jsd-<host>-<random>`: the host name says whose it is; the suffix keeps two instances on one host (or
    two containers with one host name) from taking each other's session at the broker."""
    return f"jsd-{socket.gethostname()}-{secrets.token_hex(4)}"


class PublishRefused(Exception):
    """The broker answered a PUBACK with a failure reason code (MQTT 5), e.g. the ACL denied the topic."""


class _Client(aiomqtt.Client):
    """aiomqtt's client, also counting PUBACKs that refuse a message; aiomqtt itself drops the reason code."""

    refused: int = 0
    last_refusal: str = ""

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if reason_code.is_failure:
            self.refused += 1
            self.last_refusal = str(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


class Publisher:
    """Keeps one broker connection up; drains the outbox and answers commands while it is."""

    def __init__(self, config: MqttConfig, topics: Topics, outbox: Outbox, commands: CommandHandler) -> None:
        self._config = config
        self._topics = topics
        self._outbox = outbox
        self._commands = commands
        self._tls = config.tls_context()

    def _client(self) -> _Client:
        c = self._config
        v5 = c.protocol == "5"
        client = _Client(
            c.host,
            c.port,
            username=c.username,
            password=c.password,
            identifier=c.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            will=aiomqtt.Will(self._topics.status, b"offline", qos=1, retain=True),
            keepalive=c.keepalive,
            tls_context=self._tls,
            max_inflight_messages=BATCH,
            timeout=30,
            socket_options=[_NO_DELAY],
        )
        client.pending_calls_threshold = 2 * BATCH
        return client

    async def run(self) -> None:
        """Until cancelled: connect, work, and after any failure wait (doubling) and connect again."""
        c = self._config
        delay = c.retry_min
        started: float | None = None  # when the current connection came up; a long one resets the backoff
        while True:
            try:
                async with self._client() as client:
                    log.info("connected to MQTT broker %s:%d (MQTT %s)", c.host, c.port, c.protocol)
                    started = time.monotonic()
                    metrics.MQTT_CONNECTED.set(1)
                    try:
                        await self._session(client)
                    finally:
                        metrics.MQTT_CONNECTED.set(0)
            except (aiomqtt.MqttError, OSError, PublishRefused) as exc:
                level, problem = logging.WARNING, str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: keep trying, never die
                level, problem = logging.ERROR, f"event publisher: {type(exc).__name__}"
            if started is not None and time.monotonic() - started > c.retry_max:
                delay = c.retry_min
            started = None
            log.log(level, "MQTT broker %s:%d: %s; retrying in %.1f s", c.host, c.port, problem, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, c.retry_max)

    async def _session(self, client: _Client) -> None:
        granted = await client.subscribe(self._topics.all_commands, qos=1)
        if any(code.is_failure if isinstance(code, ReasonCode) else code >= 0x80 for code in granted):
            log.error("the broker refused the subscription to %s: commands are not served", self._topics.all_commands)
        await client.publish(self._topics.status, b"online", qos=1, retain=True)  # "online": commands are served
        try:
            await _first_failure(self._drain(client), self._serve_commands(client))
        except asyncio.CancelledError:
            await _quietly(client.publish(self._topics.status, b"offline", qos=1, retain=True, timeout=2))
            raise

    async def _drain(self, client: _Client) -> None:
        """Publish pending events batch by batch; acknowledge a batch only when all of it was accepted."""
        while True:
            await self._outbox.prune_if_due()  # also under steady load, when the outbox is never found empty
            batch = await self._outbox.pending(BATCH)
            if not batch:
                await asyncio.sleep(self._config.poll_interval)
                continue
            refused = client.refused
            await _in_order(client, batch)
            if client.refused != refused:
                raise PublishRefused(
                    f"broker refused {client.refused - refused} of {len(batch)} events ({client.last_refusal}); "
                    "they stay in the outbox"
                )
            await self._outbox.acknowledge(batch)

    async def _serve_commands(self, client: _Client) -> None:
        """One reply per command, in arrival order; ends (with MqttError) when the connection drops.

        A retained command (flagged so only when the broker replays it to a new subscription) is skipped:
        it would run again at every reconnection.
        """
        async for message in client.messages:
            if message.retain:
                log.warning("ignored a retained command on %s: a stale copy, handled when it was sent", message.topic)
                continue
            props = message.properties
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            command = Command(
                str(message.topic),
                payload,
                getattr(props, "ResponseTopic", None) if props is not None else None,
                getattr(props, "CorrelationData", None) if props is not None else None,
            )
            await self._send(client, await self._commands.handle(command))

    async def _send(self, client: _Client, reply: Reply) -> None:
        properties = None
        if self._config.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho ships no hints here
            properties.ContentType = "application/json"
            if reply.correlation_data is not None:
                properties.CorrelationData = reply.correlation_data
        await client.publish(reply.topic, reply.payload, qos=1, properties=properties)


async def _in_order(client: _Client, batch: list[Outgoing]) -> None:
    """All publishes of a batch in flight at once; tasks start in creation order, so PUBLISHes leave in order."""
    tasks = [asyncio.ensure_future(client.publish(item.topic, item.payload, qos=1)) for item in batch]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _first_failure(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run jobs side by side until one of them ends; cancel the others, then raise what ended it."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        error = task.exception()
        if error is not None:
            raise error
    raise aiomqtt.MqttError("the broker connection ended")


async def _quietly(job: Awaitable[None]) -> None:
    try:
        await job
    except (aiomqtt.MqttError, OSError):
        return


async def keep_without_broker(outbox: Outbox, poll_interval: float) -> None:
    """No broker configured: there is nobody to deliver to, so outbox rows are cleared (without reading or
    rendering their events: that was ≈ 5 % of a worker's Python CPU under join load) and retention applies."""
    while True:
        try:
            cleared = await outbox.discard(1000)
            await outbox.prune_if_due()
        except Exception as exc:  # noqa: BLE001 - the database may be away for a while; never die
            log.error("event retention: %s", type(exc).__name__)
            cleared = 0
        if cleared < 1000:
            await asyncio.sleep(max(poll_interval, 1.0))
