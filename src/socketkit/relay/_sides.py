"""Openers: turn a parsed relay address into one side of a link, on the event loop.

Every side is opened without blocking the loop: stream sockets come from
the socket seam (``_sockets.client_socket``, so ``--trace`` sees them) and
are connected with the loop's non-blocking ``sock_connect``; names other
than IP literals are resolved in the loop's executor. TLS is the
``_tls.TLSTransport`` layer over the connected socket's transport (it can
half-close, which asyncio's own TLS transport cannot). With plain sockets
(no ``--trace``) the loop makes and connects stream sockets itself
(``open_stream``). UDP is a connected
datagram socket: one write is one datagram, and there is no end of stream.

Standard input and output are the loop's pipe transports on POSIX
(pipes, terminals, sockets: whatever epoll/kqueue can watch). A regular
file or a device the loop cannot watch (``< file``, ``/dev/null``) never
blocks, so it is read and written directly from the loop (``_FileSource``,
``_FileSink``). Only where the loop cannot watch a pipe or a console at
all (Windows: the proactor loop has no pipe transports for fds 0 and 1)
standard input is read by one small thread (``_ThreadSource``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from .._sockets import (
    MAX_UDP_PAYLOAD,
    ConnectAttempt,
    Connecting,
    connect_failure,
    plain_sockets,
)
from ..address import InetEndpoint, UnixEndpoint
from ..errors import SocketkitError
from ..server import ServerLog
from ._grammar import RelayAddress
from ._link import WRITE_HIGH_WATER, Link, SideProtocol
from ._proxy import open_proxied
from ._tls import TLSLayer, handshake_done

__all__ = [
    "OpenOptions",
    "connect_stream",
    "open_side",
    "open_stdio",
    "open_stream",
    "stdio_transports",
]

#: Bytes per read of standard input from a file (the size asyncio reads from a pipe).
FILE_CHUNK = 256 * 1024


@dataclass(slots=True)
class OpenOptions:
    """What opening an address needs besides the address itself."""

    family: int = socket.AF_UNSPEC
    connect_timeout: float | None = None
    tls_client: Any = None  # ssl.SSLContext
    tls_server: Any = None  # ssl.SSLContext
    server_hostname: str | None = None
    #: Local (address or None, port) to connect from (netcat's ``-s``/``-p``).
    source: tuple[str | None, int] | None = None
    log: ServerLog = field(default_factory=lambda: ServerLog(sys.stderr, sys.stderr))


def address_family(addr: RelayAddress, opts: OpenOptions) -> int:
    """The family an address asks for (``,4``/``,6``), else the command's (-4/-6)."""
    if addr.has("4"):
        return socket.AF_INET
    if addr.has("6"):
        return socket.AF_INET6
    return opts.family


async def _attempts(connecting: Connecting) -> list[ConnectAttempt]:
    """The addresses to try: a host name is resolved in the loop's executor
    (as ``socketkit.aio`` does), an address literal needs no thread."""
    if connecting.resolving:
        return await asyncio.get_running_loop().run_in_executor(None, connecting.attempts)
    return connecting.attempts()


async def connect_stream(
    endpoint: InetEndpoint | UnixEndpoint,
    *,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = None,
    type: int = socket.SOCK_STREAM,
    source: tuple[str | None, int] | None = None,
) -> socket.socket:
    """A non-blocking socket from the seam connected to ``endpoint``, each address in turn.

    Raises:
        ConnectError, SocketTimeoutError, AddressError: as ``_sockets.connect_socket``.
    """
    loop = asyncio.get_running_loop()
    connecting = Connecting(endpoint, type=type, family=family, timeout=timeout, source=source)
    for attempt in await _attempts(connecting):
        with connecting.trying(attempt) as sock:
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, attempt.sockaddr)
            return connecting.connected(attempt, sock)
    raise connecting.failure()


async def open_stream(
    endpoint: InetEndpoint | UnixEndpoint,
    factory: Callable[[], asyncio.BaseProtocol],
    *,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = None,
    source: tuple[str | None, int] | None = None,
) -> Any:
    """A stream transport connected to ``endpoint``, with ``factory``'s protocol.

    The socket comes from the seam (``connect_stream``) when the seam makes
    traced sockets, so that ``--trace`` shows every call, and for Unix sockets
    (abstract names included), and to bind a ``source`` address. Otherwise the loop makes and connects it
    itself: uvloop does so in C, with no Python socket object per connection
    (a tenth of a relayed connection's memory).

    Raises:
        ConnectError, SocketTimeoutError, AddressError: as ``connect_stream``.
    """
    loop = asyncio.get_running_loop()
    if not plain_sockets() or isinstance(endpoint, UnixEndpoint) or source is not None:
        sock = await connect_stream(endpoint, family=family, timeout=timeout, source=source)
        try:
            transport, _ = await loop.create_connection(factory, sock=sock)
        except BaseException:
            sock.close()
            raise
        return transport
    connecting = Connecting(endpoint, family=family, timeout=timeout)
    last: SocketkitError | None = None
    for attempt in await _attempts(connecting):
        try:
            async with asyncio.timeout(timeout):
                sockaddr = attempt.sockaddr
                assert not isinstance(sockaddr, str)
                transport, _ = await loop.create_connection(
                    factory, sockaddr[0], sockaddr[1], family=attempt.family
                )
        except OSError as exc:
            last = connect_failure(exc, endpoint, attempt.address, timeout)
            continue
        return transport
    assert last is not None
    raise last


class DatagramSideProtocol(SideProtocol):
    """A connected UDP socket as a side: one datagram in, one chunk on."""

    __slots__ = ()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data:  # an empty datagram is no end of stream
            self.data_received(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from an earlier send (nothing listens there).
        self.link.lost(self.index, exc)


class DatagramSink:
    """A datagram transport as a link's sink: each write is cut into datagrams."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), MAX_UDP_PAYLOAD):
            self.transport.sendto(view[start : start + MAX_UDP_PAYLOAD])

    def write_eof(self) -> None:
        """UDP has no end of stream."""

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        """Datagrams keep arriving; a sink that is full drops, as UDP may."""

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


async def open_side(
    addr: RelayAddress,
    opts: OpenOptions,
    link: Link,
    index: int,
    *,
    counter: Any = None,
) -> None:
    """Open ``addr`` (not a listener) and attach it to ``link`` as side ``index``.

    Raises:
        ConnectError, SocketTimeoutError, AddressError: opening failed.
        TLSError: the handshake or the certificate check failed.
    """
    loop = asyncio.get_running_loop()
    if addr.kind == "stdio":
        await open_stdio(link, index)
        return
    endpoint = addr.endpoint
    assert endpoint is not None, addr
    family = address_family(addr, opts)
    name = str(endpoint)
    if addr.transport == "udp":
        sock = await connect_stream(
            endpoint, family=family, type=socket.SOCK_DGRAM, source=opts.source
        )
        dgram = DatagramSideProtocol(link, index, counter=counter)
        dgram_transport, _ = await loop.create_datagram_endpoint(lambda: dgram, sock=sock)
        udp = DatagramSink(dgram_transport)
        link.attach(index, udp, udp, dgram)
        return
    if addr.transport == "proxy":
        await open_proxied(addr, link, index, opts.log, family, opts.connect_timeout, counter)
        return
    protocol = SideProtocol(link, index, counter=counter)
    timeout = opts.connect_timeout
    if addr.transport == "tls":
        assert opts.tls_client is not None
        assert isinstance(endpoint, InetEndpoint)
        hostname = addr.get("sni") or opts.server_hostname or endpoint.host or "localhost"
        layer = TLSLayer(opts.tls_client, protocol, server_side=False, server_hostname=hostname)
        await open_stream(
            endpoint, lambda: layer, family=family, timeout=timeout, source=opts.source
        )
        opts.log.event(f"connected to {name}", "connected", True, peer=name)
        await handshake_done(layer, role="client", where=name, timeout=timeout)
        opts.log.event(f"TLS with {name}: {layer.describe()}", "tls", True)
        protocol.connection_made(cast(asyncio.Transport, layer))  # the layer is its transport
        link.attach(index, layer, layer, protocol)
        layer.start_app()
        return
    transport = await open_stream(
        endpoint, lambda: protocol, family=family, timeout=timeout, source=opts.source
    )
    opts.log.event(f"connected to {name}", "connected", True, peer=name)
    link.attach(index, transport, transport, protocol)


# ------------------------------------------------------------------ standard I/O


def _pollable(fd: int) -> bool:
    """Whether the loop can watch ``fd`` (pipes, sockets, terminals; not files)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return stat.S_ISCHR(mode) and os.isatty(fd)


class _FileSource:
    """Standard input from a regular file or device: read from the loop (it never blocks)."""

    def __init__(self, fd: int, protocol: Any) -> None:
        self.fd = fd
        self.protocol = protocol
        self.paused = True
        self.closed = False
        self.loop = asyncio.get_running_loop()

    def _read(self) -> None:
        if self.paused or self.closed:
            return
        try:
            data = os.read(self.fd, FILE_CHUNK)
        except OSError as exc:
            self.closed = True
            self.protocol.connection_lost(exc)
            return
        if not data:
            self.closed = True
            self.protocol.eof_received()
            self.protocol.connection_lost(None)
            return
        self.protocol.data_received(data)
        self.loop.call_soon(self._read)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.loop.call_soon(self._read)

    def close(self) -> None:
        self.closed = True


class _ThreadSource(_FileSource):
    """Standard input read by one thread, for a loop that cannot watch it (Windows)."""

    def __init__(self, fd: int, protocol: Any) -> None:
        super().__init__(fd, protocol)
        self._go = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="stdin").start()

    def _run(self) -> None:
        while True:
            self._go.wait()
            if self.closed:
                return
            try:
                data = os.read(self.fd, FILE_CHUNK)
            except OSError as exc:
                self._deliver(self.protocol.connection_lost, exc)
                return
            if not data:
                self._deliver(self.protocol.eof_received)
                self._deliver(self.protocol.connection_lost, None)
                return
            self._deliver(self.protocol.data_received, data)

    def _deliver(self, call: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            self.loop.call_soon_threadsafe(self._if_open, call, *args)

    def _if_open(self, call: Callable[..., Any], *args: Any) -> None:
        if not self.closed:
            call(*args)

    def pause_reading(self) -> None:
        self._go.clear()

    def resume_reading(self) -> None:
        if not self.closed:
            self._go.set()

    def close(self) -> None:
        self.closed = True
        self._go.set()


class _FileSink:
    """Standard output to a regular file: written from the loop (a file never makes us wait)."""

    def __init__(self, fd: int, protocol: Any) -> None:
        self.fd = fd
        self.protocol = protocol
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            if not self.closed:
                self.closed = True
                self.protocol.connection_lost(exc)

    def write_eof(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close


def _restore_blocking_at_exit(*fds: int) -> None:
    """The pipe transports make fds 0 and 1 non-blocking, and a terminal shares
    that flag with the shell: put back what it was when the process exits."""
    if not hasattr(os, "get_blocking"):  # Windows before 3.12: no such flag to restore
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.get_blocking(fd):
                atexit.register(_set_blocking, fd)


def _set_blocking(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.set_blocking(fd, True)


async def stdio_transports(
    reader: Any, writer: Any, *, read: bool = True, read_fd: int = 0, write_fd: int = 1
) -> tuple[Any, Any, bool]:
    """Standard input (when ``read``) and output as transports for ``reader`` and ``writer``.

    Returns (source or None, sink, whether the input stays open: a terminal).
    The pipe transports get duplicates of fds 0 and 1, so closing them
    leaves the process's own descriptors alone.
    """
    loop = asyncio.get_running_loop()
    _restore_blocking_at_exit(read_fd, write_fd)
    source: Any = None
    if read:
        if sys.platform == "win32":
            source = _ThreadSource(read_fd, reader)
        elif _pollable(read_fd):
            pipe = open(os.dup(read_fd), "rb", buffering=0)  # noqa: SIM115 (the transport closes it)
            source, _ = await loop.connect_read_pipe(lambda: reader, pipe)
        else:
            source = _FileSource(read_fd, reader)
    sink: Any
    if sys.platform != "win32" and _pollable(write_fd):
        pipe = open(os.dup(write_fd), "wb", buffering=0)  # noqa: SIM115 (the transport closes it)
        sink, _ = await loop.connect_write_pipe(lambda: writer, pipe)
        with contextlib.suppress(AttributeError, NotImplementedError):
            sink.set_write_buffer_limits(WRITE_HIGH_WATER)
    else:
        sink = _FileSink(write_fd, writer)
    try:
        stays_open = os.isatty(read_fd)
    except OSError:
        stays_open = False
    return source, sink, stays_open


async def open_stdio(link: Link, index: int) -> None:
    """Attach standard input and output to ``link`` as side ``index``."""
    reader = SideProtocol(link, index, "source")
    writer = SideProtocol(link, index, "sink")
    source, sink, stays_open = await stdio_transports(
        reader, writer, read=not link.sides[index].ended
    )
    link.attach(
        index,
        source,
        sink,
        reader if source is not None else None,
        stays_open=stays_open,
        sink_protocol=writer,
    )
