"""asyncio stream connections with the same shape as ``socketkit.sync``.

The twin of ``sync/_connection.py``: same method names (``aclose`` for
``close``), same deadlines per call, same error translation, on asyncio's
streams so that TLS (``start_tls``) and uvloop work unchanged. Bytes go from
the ``StreamReader`` into our own ``ReceiveBuffer`` so the framing codecs are
shared with the blocking layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

from .._closing import AsyncClosing
from .._sockets import bind_socket, bound_port, connect_failure, local_name
from .._timeouts import DEFAULT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, TimeoutArg
from ..address import Endpoint, InetEndpoint, UnixEndpoint, format_sockaddr, parse_endpoint
from ..errors import (
    BrokenError,
    ClosedError,
    ConnectError,
    IncompleteReadError,
    SocketkitError,
    SocketTimeoutError,
    timeout_error,
    translate_os_error,
)
from ..framing import Codec, LineCodec, ReceiveBuffer
from ..framing.codecs import DEFAULT_MAX_LINE_LENGTH

__all__ = ["Connection", "Server", "connect", "start_server"]

#: Bytes asked of one read: 64 KiB, as in the blocking layer.
RECEIVE_SIZE = 64 * 1024


class Connection(AsyncClosing):
    """A connected stream with whole-message sends and receives (asyncio)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float | None = DEFAULT_IO_TIMEOUT,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._closed = False
        self._write_shut = False
        self._send_failed = False
        #: Default timeout, in seconds, of each call on this connection.
        self.timeout = timeout
        #: The peer's address, formatted.
        self.peer = format_sockaddr(writer.get_extra_info("peername"))
        #: This side's address, formatted.
        self.local = format_sockaddr(writer.get_extra_info("sockname"))

    @property
    def writer(self) -> asyncio.StreamWriter:
        """The asyncio writer (for ``start_tls`` and transport details)."""
        return self._writer

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<aio.Connection {self.local} -> {self.peer} {state}>"

    def _timeout(self, timeout: TimeoutArg) -> float | None:
        if self._closed:
            raise ClosedError(f"connection to {self.peer} is already closed")
        return self.timeout if timeout is DEFAULT else timeout

    def _timed_out(self, phase: str, timeout: float | None) -> SocketTimeoutError:
        return timeout_error(phase, self.peer, timeout)

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self._reader.read(RECEIVE_SIZE)
        except OSError as exc:
            raise translate_os_error(exc, phase="receive", where=self.peer) from exc
        if not data:
            self._eof = True
            return False
        self._buffer.feed(data)
        return True

    async def receive_some(
        self, max_bytes: int = RECEIVE_SIZE, *, timeout: TimeoutArg = DEFAULT
    ) -> bytes:
        """Return what has arrived, at most ``max_bytes``; ``b""`` at end of stream."""
        limit = self._timeout(timeout)
        try:
            async with asyncio.timeout(limit):
                if not self._buffer and not await self._fill():
                    return b""
        except TimeoutError as exc:
            raise self._timed_out("receive", limit) from exc
        return self._buffer.extract(max_bytes)

    async def receive_exactly(self, n: int, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Return exactly ``n`` bytes; see ``sync.Connection.receive_exactly``."""
        limit = self._timeout(timeout)
        try:
            async with asyncio.timeout(limit):
                while len(self._buffer) < n:
                    if not await self._fill():
                        partial = self._buffer.extract_all()
                        raise IncompleteReadError(
                            f"{self.peer} closed the connection after {len(partial)} of {n} bytes",
                            partial=partial,
                            expected=n,
                        )
        except TimeoutError as exc:
            raise self._timed_out("receive", limit) from exc
        return self._buffer.extract(n)

    async def receive_message(self, codec: Codec, *, timeout: TimeoutArg = DEFAULT) -> bytes | None:
        """Return the next message framed by ``codec``; None at a clean end of stream."""
        limit = self._timeout(timeout)
        try:
            async with asyncio.timeout(limit):
                while True:
                    message = codec.maybe_decode(self._buffer)
                    if message is not None:
                        return message
                    if not await self._fill():
                        return codec.decode_eof(self._buffer)
        except TimeoutError as exc:
            raise self._timed_out("receive", limit) from exc

    async def receive_line(
        self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH, timeout: TimeoutArg = DEFAULT
    ) -> bytes | None:
        """Return the next line without its ending; None at a clean end of stream."""
        return await self.receive_message(LineCodec(max_line_length), timeout=timeout)

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """Send every byte and wait until the transport's buffer drains below its mark.

        Raises:
            SocketTimeoutError: the peer stopped reading; some bytes may be buffered.
            BrokenError: the peer reset the connection.
        """
        limit = self._timeout(timeout)
        if self._write_shut:
            raise ClosedError(f"cannot send to {self.peer}: this side already shut down writing")
        try:
            async with asyncio.timeout(limit):
                self._writer.write(data)
                await self._writer.drain()
        except BaseException as exc:
            # Timed out, broken or cancelled: aclose() drops what is left
            # in the buffer instead of waiting for a peer that may never read.
            self._send_failed = True
            if isinstance(exc, TimeoutError):
                raise self._timed_out("send", limit) from exc
            if isinstance(exc, OSError):
                raise translate_os_error(exc, phase="send", where=self.peer) from exc
            raise

    async def send_message(
        self, codec: Codec, message: bytes, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """Frame ``message`` with ``codec`` and send all of it."""
        await self.send_all(codec.encode(message), timeout=timeout)

    async def shutdown_write(self) -> None:
        """Half-close: the peer's reads see end of stream; receiving still works.

        Sending afterwards raises ``ClosedError``.
        """
        if self._closed:
            raise ClosedError(f"connection to {self.peer} is already closed")
        if not self._writer.can_write_eof():
            raise BrokenError(f"cannot half-close the connection to {self.peer} (TLS or closed)")
        try:
            await self._writer.drain()
            self._writer.write_eof()
        except OSError as exc:
            raise translate_os_error(exc, phase="send", where=self.peer) from exc
        self._write_shut = True

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
        if self._closed:
            return
        self._closed = True
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

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    @property
    def at_eof(self) -> bool:
        """True once the peer's end of stream was seen and the buffer is empty."""
        return self._eof and not self._buffer


async def connect(
    endpoint: Endpoint | str,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
) -> Connection:
    """Open a stream connection; see ``socketkit.sync.connect``."""
    if isinstance(endpoint, str):
        endpoint = parse_endpoint(endpoint, default_host="127.0.0.1")
    try:
        async with asyncio.timeout(connect_timeout):
            if isinstance(endpoint, UnixEndpoint):
                reader, writer = await asyncio.open_unix_connection(endpoint.sockaddr)
            else:
                sock = await _connect_inet(endpoint, family)
                reader, writer = await asyncio.open_connection(sock=sock)
    except TimeoutError as exc:
        raise timeout_error("connect", str(endpoint), connect_timeout) from exc
    except OSError as exc:
        raise translate_os_error(exc, phase="connect", where=str(endpoint)) from exc
    return Connection(reader, writer, timeout=timeout)


async def _connect_inet(endpoint: InetEndpoint, family: int) -> socket.socket:
    """Resolve and try each address in turn, as ``_sockets.connect_socket`` does.

    asyncio's own ``open_connection(host, port)`` folds the failures of a
    name with several addresses (``localhost`` -> ::1 and 127.0.0.1) into
    one "Multiple exceptions" error without an errno; trying them here keeps
    the errno, so the message is the same as the blocking layer's.
    """
    if endpoint.host is None:
        raise ConnectError("cannot connect: no host given")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(
            endpoint.host, endpoint.port, family=family, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        from ..address import resolve

        resolve(endpoint, family=family)  # raises the HostNotFoundError with our message
        raise ConnectError(f"cannot connect to {endpoint}: {exc}") from exc
    last: SocketkitError | None = None
    for fam, type_, proto, _canon, sockaddr in infos:
        sock = socket.socket(fam, type_, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            last = connect_failure(exc, endpoint, format_sockaddr(sockaddr), None)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if last is None:
        raise ConnectError(f"cannot connect to {endpoint}: no usable address")
    raise last


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
    if isinstance(endpoint, int):
        endpoint = InetEndpoint(None, endpoint)
    elif isinstance(endpoint, str):
        endpoint = parse_endpoint(endpoint, default_host=None)
    sock = bind_socket(endpoint, family=family, backlog=backlog, reuse_port=reuse_port)

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, timeout=timeout)
        try:
            await handler(conn)
        except SocketkitError:
            pass
        finally:
            await conn.aclose()

    try:
        if isinstance(endpoint, UnixEndpoint):
            server = await asyncio.start_unix_server(on_client, sock=sock)
        else:
            server = await asyncio.start_server(on_client, sock=sock)
    except BaseException:
        sock.close()
        raise
    return Server(server, sock)
