"""Plugging one's own handler into the engine, over the library's connection API.

A handler is ``async def handler(conn: socketkit.aio.Connection) -> None``.
It gets the same engine as the built-in services (limits, idle timeout,
PROXY protocol, graceful shutdown, stats) and the same connection API as
``socketkit.aio`` clients (``receive_line``, ``receive_exactly``,
``send_all``, codecs, timeouts)::

    from socketkit.server import HandlerService, ServerConfig, ServerLog, run_stream_server

    async def shout(conn):
        while (line := await conn.receive_line(max_line_length=1024)) is not None:
            await conn.send_all(line.upper() + b"\\n")

    run_stream_server(ServerConfig(service=HandlerService(shout)), ServerLog())

Strategy: the engine's ``ConnectionProtocol`` keeps its bookkeeping and
forwards the transport's callbacks to an asyncio ``StreamReaderProtocol``,
which builds the reader and writer that ``aio.Connection`` wraps. A handler
that raises ends its own connection with a one-line logged reason; the
server carries on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from .._timeouts import DEFAULT_IO_TIMEOUT
from ..aio import Connection, Handler
from ..errors import SocketkitError
from ..framing import Codec
from ._services import ConnectionProtocol, ProtocolFactory, Service

if TYPE_CHECKING:
    from ._engine import ConnectionHost

__all__ = ["Handler", "HandlerProtocol", "HandlerService"]

#: StreamReader buffer limit: reading pauses past it (backpressure).
_READER_LIMIT = 256 * 1024


class HandlerProtocol(ConnectionProtocol):
    """Runs a handler coroutine for one connection."""

    __slots__ = ("_handler", "_inner", "_timeout")

    def __init__(self, host: ConnectionHost, handler: Handler, timeout: float | None) -> None:
        super().__init__(host)
        self._handler = handler
        self._timeout = timeout
        self._inner: asyncio.StreamReaderProtocol | None = None

    def started(self) -> None:
        reader = asyncio.StreamReader(limit=_READER_LIMIT)
        self._inner = asyncio.StreamReaderProtocol(reader, self._run)
        assert self.transport is not None
        counting = cast(asyncio.Transport, _CountingTransport(self.transport, self))
        self._inner.connection_made(counting)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, timeout=self._timeout)
        conn.peer = self.peer  # the real client, when a PROXY header named it
        try:
            await self._handler(conn)
        except SocketkitError as exc:
            self.closing_reason = str(exc)
        except Exception as exc:
            self.host.stats.errors += 1
            self.closing_reason = f"handler failed: {type(exc).__name__}: {exc}"
        finally:
            await conn.aclose()

    def received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def ended(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def shutdown_requested(self) -> None:
        """Handlers finish on their own, within the drain timeout."""


class _CountingTransport:
    """The connection's transport as the handler's writer sees it: every
    write is counted in the connection's ``bytes_out``; the rest is passed on."""

    __slots__ = ("_conn", "_transport")

    def __init__(self, transport: asyncio.Transport, conn: ConnectionProtocol) -> None:
        self._transport = transport
        self._conn = conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._conn.bytes_out += len(data)
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HandlerService(Service):
    """A service that runs ``handler`` for each connection (stream servers only).

    Args:
        handler: ``async def handler(conn: socketkit.aio.Connection) -> None``.
        timeout: each of the connection's calls times out after this many
            seconds (None: never); the default is the library's.
    """

    name = "handler"

    def __init__(self, handler: Handler, timeout: float | None = DEFAULT_IO_TIMEOUT) -> None:
        self.handler = handler
        self.timeout = timeout

    def protocol_factory(self, codec: Codec | None = None) -> ProtocolFactory:
        # The handler frames its own messages through the connection's API.
        handler, timeout = self.handler, self.timeout
        return lambda host: HandlerProtocol(host, handler, timeout)
