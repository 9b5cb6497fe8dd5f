"""A TCP relay on asyncio Protocols and uvloop: the reference for ``socketkit relay``.

    python asyncio_relay.py --port 0 --target-port Q [--target-host 127.0.0.1] [--no-uvloop]

What a careful asyncio relay does, and nothing more: per accepted client, the
upstream connection is opened with ``loop.create_connection`` (reading the
client is paused meanwhile); bytes go straight from one transport's
``data_received`` into the other's ``write``; when a write buffer passes its
high-water mark the other side's reading pauses until it drains; an end of
stream is passed on as ``write_eof`` and the pair closes when both ends are
done; an error on one side aborts the other.  Prints ``listening on port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

from _common import BACKLOG, announce, install_uvloop, prepare

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class Half(asyncio.Protocol):
    """One side of a relayed pair; ``peer`` is the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.eof = False
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        stream.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if peer.eof:
                peer.transport.close()
                assert self.transport is not None
                self.transport.close()
            else:
                peer.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if exc is None:
                peer.transport.close()
            else:
                peer.transport.abort()
        self.transport = None

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Client(Half):
    def __init__(self, target: tuple[str, int], tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self.target = target
        self.tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.pause_reading()  # type: ignore[union-attr]
        task = asyncio.get_running_loop().create_task(self.open_upstream())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_upstream(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = Half()
        upstream.peer = self
        try:
            await loop.create_connection(lambda: upstream, *self.target)
        except OSError:
            if self.transport is not None:
                self.transport.abort()
            return
        if self.transport is None:
            assert upstream.transport is not None
            upstream.transport.close()
            return
        self.peer = upstream
        assert upstream.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        if self.eof:
            upstream.transport.write_eof()
        self.transport.resume_reading()


async def main(host: str, port: int, target: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(
        lambda: Client(target, tasks), host, port, backlog=BACKLOG, reuse_address=True
    )
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--no-uvloop", action="store_true", help="the default asyncio loop")
    args = parser.parse_args()
    prepare()
    if not args.no_uvloop:
        install_uvloop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, (args.target_host, args.target_port)))
