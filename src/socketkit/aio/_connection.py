"""asyncio stream connections with the same shape as ``socketkit.sync``.

Strategy: a fill loop over the sans-I/O ``StreamCore`` (``socketkit._stream``),
the same core as the blocking layer's, so both return, buffer and raise
alike; method names are the same (``aclose`` for ``close``). Bytes are read
from asyncio's ``StreamReader`` and written through its ``StreamWriter``, so
TLS (asyncio's SSL transport) and uvloop work unchanged; each call's
deadline is one ``asyncio.timeout`` around the whole call.

Sockets are made by the seam (``socketkit._sockets``), as the blocking
layer's are, so ``--trace`` sees them and both layers try the same
addresses in the same order and word failures alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import TypeVar

from .._closing import AsyncClosing
from .._sockets import (
    CONNECT_RETRY_INTERVAL,
    aconnect_socket,
    bind_socket,
    bound_port,
    local_name,
    retry_refused,
)
from .._stream import NEED_DATA, RECEIVE_SIZE, NeedData, StreamFacts
from .._timeouts import DEFAULT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, TimeoutArg
from .._tunnel import Proxy, aopen_proxy_socket
from ..address import Endpoint, UnixEndpoint, as_endpoint, format_sockaddr
from ..errors import ConnectError, SocketkitError, timeout_error, translate_os_error
from ..framing import Codec, LineCodec
from ..framing.codecs import DEFAULT_MAX_LINE_LENGTH
from ..tls import client_server_hostname, translate_ssl_error

__all__ = ["Connection", "Handler", "Server", "connect", "start_server"]

T = TypeVar("T")


class Connection(StreamFacts, AsyncClosing):
    """A connected stream with whole-message sends and receives (asyncio)."""

    _kind = "aio.Connection"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float | None = DEFAULT_IO_TIMEOUT,
    ) -> None:
        super().__init__(
            peer=format_sockaddr(writer.get_extra_info("peername")),
            local=format_sockaddr(writer.get_extra_info("sockname")),
            timeout=timeout,
        )
        self._reader = reader
        self._writer = writer
        self._send_failed = False

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The asyncio writer (for ``start_tls`` and transport details)."""
        return self._writer

    # -- the fill loop ---------------------------------------------------

    async def _receive(self, answer: Callable[[], T | NeedData], timeout: TimeoutArg) -> T:
        """Call ``answer`` until it has one, reading once between calls."""
        limit = self._call_timeout(timeout)
        result = answer()
        if result is not NEED_DATA:  # no timer for what is already buffered
            return result
        try:
            async with asyncio.timeout(limit):
                while result is NEED_DATA:
                    try:
                        data = await self._reader.read(RECEIVE_SIZE)
                    except OSError as exc:
                        raise self._core.io_error(exc, "receive", limit) from exc
                    self._core.feed(data)
                    result = answer()
        except TimeoutError as exc:
            raise timeout_error("receive", self.peer, limit) from exc
        return result

    # -- receiving -------------------------------------------------------

    async def receive_some(
        self, max_bytes: int = RECEIVE_SIZE, *, timeout: TimeoutArg = DEFAULT
    ) -> bytes:
        """Return what has arrived, at most ``max_bytes``; see ``sync.Connection``."""
        return await self._receive(lambda: self._core.next_some(max_bytes), timeout)

    async def receive_exactly(self, n: int, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Return exactly ``n`` bytes; see ``sync.Connection.receive_exactly``."""
        return await self._receive(lambda: self._core.next_exactly(n), timeout)

    async def receive_message(self, codec: Codec, *, timeout: TimeoutArg = DEFAULT) -> bytes | None:
        """Return the next message framed by ``codec``; None at a clean end of stream."""
        return await self._receive(lambda: self._core.next_message(codec), timeout)

    async def receive_line(
        self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH, timeout: TimeoutArg = DEFAULT
    ) -> bytes | None:
        """Return the next line without its ending; None at a clean end of stream."""
        return await self.receive_message(LineCodec(max_line_length), timeout=timeout)

    # -- sending ---------------------------------------------------------

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """Send every byte and wait until the transport's buffer drains below its mark.

        Raises:
            SocketTimeoutError: the peer stopped reading; the message says how
                many bytes left the transport's buffer before the time ran out.
            BrokenError: the peer reset the connection; some bytes may have gone.
        """
        limit = self._call_timeout(timeout)
        self._core.check_send()
        transport = self._writer.transport
        total = memoryview(data).nbytes
        try:
            async with asyncio.timeout(limit):
                self._writer.write(data)
                await self._writer.drain()
        except BaseException as exc:
            # Timed out, broken or cancelled: aclose() drops what is left
            # in the buffer instead of waiting for a peer that may never read.
            self._send_failed = True
            if isinstance(exc, OSError):  # TimeoutError is one too
                # The buffer is written first in, first out: while any of
                # ours is sent, what is left is ours alone. A broken
                # transport has dropped its buffer, so nothing can be said.
                sent = None
                if not transport.is_closing():
                    sent = max(0, total - transport.get_write_buffer_size())
                raise self._core.send_error(exc, limit, sent, total) from exc
            raise

    async def send_message(
        self, codec: Codec, message: bytes, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """Frame ``message`` with ``codec`` and send all of it."""
        await self.send_all(codec.encode(message), timeout=timeout)

    async def shutdown_write(self) -> None:
        """Half-close: the peer's reads see end of stream; receiving still works.

        Sending afterwards raises ``ClosedError``.

        Raises:
            UnsupportedError: the connection speaks TLS.
        """
        self._core.check_half_close(tls=self._writer.get_extra_info("sslcontext") is not None)
        try:
            await self._writer.drain()
            self._writer.write_eof()
        except OSError as exc:
            raise self._core.half_close_error(exc) from exc
        self._core.write_shut = True

    async def aclose(self) -> None:
        """Close the connection; safe to call more than once.

        Bytes still in the transport's buffer are flushed for up to the
        connection's ``timeout``, then dropped (the connection is aborted).
        After a failed ``send_all`` they are dropped at once: the caller was
        already told they may not arrive.

        Unlike a socket's close(), asyncio's waits until its user-space buffer
        is written, so without this bound a peer that stopped reading would
        make ``aclose`` (and a server's handler) wait for ever.
        """
        if self._core.closed:
            return
        self._core.closed = True
        transport = self._writer.transport
        if self._send_failed:
            transport.abort()
        else:
            self._writer.close()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            try:
                async with asyncio.timeout(self.timeout):
                    await self._writer.wait_closed()
            except TimeoutError:
                transport.abort()
                await self._writer.wait_closed()


async def connect(
    endpoint: Endpoint | str,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    ssl_context: SSLContext | None = None,
    server_hostname: str | None = None,
    wait_for_server: float = 0.0,
    proxy: Proxy | None = None,
) -> Connection:
    """Open a stream connection; see ``socketkit.sync.connect`` (same arguments and errors)."""
    target = as_endpoint(endpoint, default_host="127.0.0.1")
    first = b""
    if proxy is not None:
        sock, first = await aopen_proxy_socket(
            proxy,
            target,
            family=family,
            connect_timeout=connect_timeout,
            before_tls=ssl_context is not None,
        )
    else:
        deadline = time.monotonic() + wait_for_server
        while True:
            try:
                async with asyncio.timeout(connect_timeout):
                    sock = await aconnect_socket(target, family)
                break
            except TimeoutError as exc:
                raise timeout_error("connect", str(target), connect_timeout) from exc
            except ConnectError as exc:
                if not retry_refused(exc, deadline):
                    raise
            await asyncio.sleep(CONNECT_RETRY_INTERVAL)
    hostname = None
    if ssl_context is not None:
        # "" is asyncio's "no name" (it insists on one without a host).
        hostname = client_server_hostname(target, server_hostname) or ""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=ssl_context, server_hostname=hostname
            )
    except BaseException as exc:
        sock.close()
        if not isinstance(exc, OSError):  # SSLError and TimeoutError are OSErrors
            raise
        if ssl_context is not None:
            raise translate_ssl_error(exc, where=str(target), role="client") from exc
        raise translate_os_error(exc, phase="connect", where=str(target)) from exc
    conn = Connection(reader, writer, timeout=timeout)
    if first:
        conn._core.feed(first)  # the target's first bytes, come with the proxy's reply
    return conn


#: What ``start_server`` runs for each client (and ``socketkit.server`` too).
Handler = Callable[[Connection], Awaitable[None]]


class Server(AsyncClosing):
    """A listening asyncio server; ``aclose`` stops it."""

    def __init__(self, server: asyncio.Server, sock: socket.socket) -> None:
        self._server = server
        #: The bound address, formatted.
        self.address = local_name(sock)
        #: The bound port (None for Unix sockets).
        self.port = bound_port(sock)

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        await self._server.serve_forever()

    async def aclose(self) -> None:
        """Stop listening and wait for the listening socket to close."""
        self._server.close()
        await self._server.wait_closed()


async def start_server(
    handler: Handler,
    endpoint: Endpoint | str | int = 0,
    *,
    family: int = socket.AF_UNSPEC,
    backlog: int | None = None,
    reuse_port: bool = False,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
) -> Server:
    """Listen on ``endpoint`` and run ``handler(connection)`` for each client.

    The handler's connection is closed when it returns; an exception in one
    handler is the end of that connection only.
    """
    target = as_endpoint(endpoint, default_host=None)
    sock = bind_socket(target, family=family, backlog=backlog, reuse_port=reuse_port)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, timeout=timeout)
        try:
            await handler(conn)
        except SocketkitError:
            pass
        finally:
            await conn.aclose()

    try:
        if isinstance(target, UnixEndpoint):
            server = await asyncio.start_unix_server(on_client, sock=sock)
        else:
            server = await asyncio.start_server(on_client, sock=sock)
    except BaseException:
        sock.close()
        raise
    return Server(server, sock)
