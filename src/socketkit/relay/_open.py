"""Openers: turn a parsed relay address into a channel or a listener.

Sockets come from ``_sockets.bind_socket``/``connect_socket`` (the one seam
where sockets are made: SO_REUSEADDR, dual stack, stale Unix files), and
TLS from ``socketkit.tls``. The listeners here accept one connection per
call, in blocking mode; the serving loop (``_serve``) decides about threads,
limits and access control.

A UDP "listener" has no accept: it waits for the first datagram, connects
its socket to that sender (as netcat does) and hands the datagram on as
pending data, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

from .._sockets import bind_socket, bound_port, connect_socket, local_name
from ..address import InetEndpoint, UnixEndpoint, format_sockaddr
from ..errors import SettingError, translate_os_error
from ..tls import HANDSHAKE_TIMEOUT, MemoryTLS, handshake_memory
from ._channels import Channel, DatagramChannel, SocketChannel, StdioChannel, TLSChannel
from ._grammar import RelayAddress

__all__ = ["Accepted", "Listener", "Log", "OpenOptions", "open_channel", "open_listener"]

#: accept(2) errnos meaning "that one client went away before we accepted it".
_CLIENT_GONE_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM}


class Log:
    """One-line messages on standard error, from any thread."""

    def __init__(self, stream: TextIO, verbose: bool = False, prefix: str = "socketkit") -> None:
        self.stream = stream
        self.verbose = verbose
        self.prefix = prefix
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            try:
                self.stream.write(f"{self.prefix}: {text}\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def info(self, text: str) -> None:
        """Only with -v."""
        if self.verbose:
            self._write(text)

    def warn(self, text: str) -> None:
        """Always."""
        self._write(text)


@dataclass(slots=True)
class OpenOptions:
    """What opening an address needs besides the address itself."""

    family: int = socket.AF_UNSPEC
    connect_timeout: float | None = None
    tls_client: ssl.SSLContext | None = None
    tls_server: ssl.SSLContext | None = None
    server_hostname: str | None = None
    log: Log = field(default_factory=lambda: Log(sys.stderr))


def _family(addr: RelayAddress, opts: OpenOptions) -> int:
    if addr.has("4"):
        return socket.AF_INET
    if addr.has("6"):
        return socket.AF_INET6
    return opts.family


def open_channel(addr: RelayAddress, opts: OpenOptions) -> Channel:
    """Connect to a non-listening address (tcp, udp, unix, tls, stdio).

    Raises:
        ConnectError, SocketTimeoutError, AddressError: as ``connect_socket``.
        TLSError: the handshake or the certificate check failed.
    """
    if addr.kind == "stdio":
        return StdioChannel()
    endpoint = addr.endpoint
    assert endpoint is not None, addr
    family = _family(addr, opts)
    if addr.transport == "udp":
        sock = connect_socket(endpoint, type=socket.SOCK_DGRAM, family=family)
        return DatagramChannel(sock, str(endpoint))
    sock = connect_socket(endpoint, family=family, timeout=opts.connect_timeout)
    name = str(endpoint)
    opts.log.info(f"connected to {name}")
    if addr.transport == "tls":
        assert opts.tls_client is not None
        assert isinstance(endpoint, InetEndpoint)
        host = endpoint.host or "localhost"
        tls = handshake_memory(
            sock,
            opts.tls_client,
            role="client",
            where=name,
            server_hostname=addr.get("sni") or opts.server_hostname or host,
            timeout=opts.connect_timeout or HANDSHAKE_TIMEOUT,
        )
        _log_tls(opts.log, tls, name)
        return TLSChannel(tls, name)
    return SocketChannel(sock, name)


def _log_tls(log: Log, tls: MemoryTLS, name: str) -> None:
    alpn = tls.obj.selected_alpn_protocol()
    cipher = tls.obj.cipher()
    log.info(
        f"TLS with {name}: {tls.obj.version()} {cipher[0] if cipher else ''}"
        + (f", ALPN {alpn}" if alpn else "")
    )


@dataclass(slots=True)
class Accepted:
    """One accepted connection (or a UDP listener's first peer), not yet a channel."""

    sock: socket.socket
    addr: object
    peer: str
    pending: bytes = b""

    def close(self) -> None:
        self.sock.close()


class Listener:
    """A bound socket that yields connections (``accept``) one at a time."""

    def __init__(self, addr: RelayAddress, sock: socket.socket, opts: OpenOptions) -> None:
        self.addr = addr
        self.sock = sock
        self.opts = opts
        self.name = local_name(sock)
        self.datagram = addr.transport == "udp"
        self._closed = False

    @property
    def port(self) -> int | None:
        with contextlib.suppress(OSError):  # closed already
            return bound_port(self.sock)
        return None

    def listening_line(self) -> str:
        """What -v prints once ready (tests and benchmarks wait for it)."""
        port = self.port
        kind = "UDP" if self.datagram else ("TLS" if self.addr.transport == "tls" else "")
        kind = f" {kind}" if kind else ""
        if port is None:
            return f"listening{kind} on {self.name}"
        return f"listening{kind} on port {port} ({self.name})"

    def accept(self) -> Accepted:
        """Wait for the next connection (TCP, Unix) or the first datagram (UDP)."""
        if self.datagram:
            data, addr = self.sock.recvfrom(65536)
            return Accepted(self.sock, addr, format_sockaddr(addr), data)
        while True:
            try:
                conn, addr = self.sock.accept()
            except OSError as exc:
                if self._closed:
                    raise
                # That one client went away before we took it (accept(2)):
                # not the listener's failure, so take the next one.
                if exc.errno in _CLIENT_GONE_ERRNOS:
                    continue
                raise translate_os_error(exc, phase="accept", where=self.name) from exc
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = format_sockaddr(addr) if addr else "unix:(unnamed)"
            return Accepted(conn, addr, peer)

    def channel(self, acc: Accepted) -> Channel:
        """Make the accepted connection a channel (the TLS handshake happens here).

        Raises:
            TLSError: the client's handshake failed (the socket is closed).
        """
        if self.datagram:
            try:
                acc.sock.connect(acc.addr)  # type: ignore[arg-type]
            except OSError as exc:
                raise translate_os_error(exc, phase="connect", where=acc.peer) from exc
            return DatagramChannel(acc.sock, acc.peer, acc.pending)
        if self.addr.transport == "tls":
            assert self.opts.tls_server is not None
            tls = handshake_memory(acc.sock, self.opts.tls_server, role="server", where=acc.peer)
            _log_tls(self.opts.log, tls, acc.peer)
            return TLSChannel(tls, acc.peer)
        return SocketChannel(acc.sock, acc.peer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.datagram:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            endpoint = self.addr.endpoint
            if isinstance(endpoint, UnixEndpoint) and not endpoint.path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(endpoint.path)


def open_listener(addr: RelayAddress, opts: OpenOptions, *, backlog: int | None = None) -> Listener:
    """Bind a listening address (tcp-listen, udp-listen, unix-listen, tls-listen).

    Raises:
        ListenError: address in use, permission, bad path.
        SettingError: tls-listen without a server context (hint ``"certificate"``).
    """
    endpoint = addr.endpoint
    assert endpoint is not None, addr
    if addr.transport == "tls" and opts.tls_server is None:
        raise SettingError("tls-listen needs a certificate", hint="certificate")
    sock_type = socket.SOCK_DGRAM if addr.transport == "udp" else socket.SOCK_STREAM
    option_backlog = addr.get("backlog")
    if option_backlog is not None:
        backlog = int(option_backlog)
    sock = bind_socket(endpoint, type=sock_type, family=_family(addr, opts), backlog=backlog)
    return Listener(addr, sock, opts)
