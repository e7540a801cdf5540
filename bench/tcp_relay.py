"""A TCP relay that knows its upstream ports and can be cut, for runs that take a database away on purpose.

The daemon under test reaches PostgreSQL through it, so the backends serving exactly that daemon are known
(by the relay's ports towards the server) and no other session of a shared server is touched; "down" is the
relay cut: every connection closed, new ones refused until `start` again (on the same port). A silent network
partition is `freeze`: every socket stays open, new connections are accepted, but no byte goes through either
way until `thaw` (then what was held back is delivered, as TCP would once the path heals).
Used by ``bench/db_loss.py`` and by the tests (tests/e2e, tests/ops).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["Relay", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    """Relays 127.0.0.1:`port` to `target`; `cut` closes the listener and every relayed connection, `freeze`
    holds every byte back (both ways) until `thaw`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.BaseTransport] = set()
        self.upstream_ports: set[int] = set()  # our side of each connection to the target
        self.flowing = asyncio.Event()
        self.flowing.set()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.relay, "127.0.0.1", self.port)

    def cut(self) -> None:
        self.flowing.set()
        if self.server is not None:
            self.server.close()
            self.server = None
        for transport in list(self.transports):
            transport.abort()

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer.transport, up_writer.transport}
        port = up_writer.get_extra_info("sockname")[1]
        self.transports |= pair
        self.upstream_ports.add(port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    await self.flowing.wait()
                    dst.write(data)
                    await dst.drain()
            await self.flowing.wait()  # a close is held back too: across a partition the peer never hears of it
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.transports -= pair
            self.upstream_ports.discard(port)
