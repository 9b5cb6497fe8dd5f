"""Blocking stream connections (TCP, Unix, TLS-wrapped) and listeners.

Strategy: a fill loop over the sans-I/O ``StreamCore`` (``socketkit._stream``),
which owns the receive buffer, end of stream, closed state and error
wording, shared with ``socketkit.aio``. Every call here has a deadline for
the whole call (not per recv): the socket's timeout is set to what is left
before each system call.

``send_all`` loops over ``send`` instead of using ``sendall`` so that, when it
fails halfway, the error can say how many bytes went out.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import TypeVar

from .._closing import Closing
from .._sockets import (
    CONNECT_RETRY_INTERVAL,
    bind_socket,
    bound_port,
    connect_socket,
    local_name,
    peer_name,
    retry_refused,
)
from .._stream import NEED_DATA, RECEIVE_SIZE, NeedData, StreamFacts
from .._timeouts import DEFAULT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, Deadline, TimeoutArg
from .._tunnel import Proxy, open_proxy_socket
from ..address import Endpoint, as_endpoint
from ..errors import (
    ClosedError,
    ConnectError,
    SocketTimeoutError,
    translate_os_error,
)
from ..framing import Codec, LineCodec
from ..framing.codecs import DEFAULT_MAX_LINE_LENGTH
from ..tls import client_server_hostname, handshake

__all__ = ["Connection", "Listener", "connect", "open_listener"]

T = TypeVar("T")


class Connection(StreamFacts, Closing):
    """A connected stream socket with whole-message sends and receives.

    Use as a context manager, or call ``close()``. Not thread-safe: one
    reader and one writer thread at most, as with a plain socket.
    """

    def __init__(self, sock: socket.socket, *, timeout: float | None = DEFAULT_IO_TIMEOUT) -> None:
        super().__init__(peer=peer_name(sock), local=local_name(sock), timeout=timeout)
        self._sock = sock

    @property
    def socket(self) -> socket.socket:
        """The underlying socket (for options; don't read from it directly)."""
        return self._sock

    def fileno(self) -> int:
        """The descriptor: a socket is a file descriptor."""
        return self._sock.fileno()

    # -- the fill loop ---------------------------------------------------

    def _deadline(self, timeout: TimeoutArg) -> Deadline:
        return Deadline(self._call_timeout(timeout))

    def _receive(self, answer: Callable[[], T | NeedData], timeout: TimeoutArg) -> T:
        """Call ``answer`` until it has one, receiving once between calls."""
        deadline = self._deadline(timeout)
        while True:
            result = answer()
            if result is not NEED_DATA:
                return result
            try:
                self._sock.settimeout(deadline.remaining())
                data = self._sock.recv(RECEIVE_SIZE)
            except OSError as exc:
                raise self._core.io_error(exc, "receive", deadline.timeout) from exc
            self._core.feed(data)

    # -- receiving -------------------------------------------------------

    def receive_some(
        self, max_bytes: int = RECEIVE_SIZE, *, timeout: TimeoutArg = DEFAULT
    ) -> bytes:
        """Return what has arrived, at most ``max_bytes``; ``b""`` at end of stream.

        Raises:
            SocketTimeoutError: nothing arrived in time.
            BrokenError: the connection was reset.
        """
        return self._receive(lambda: self._core.next_some(max_bytes), timeout)

    def receive_exactly(self, n: int, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Return exactly ``n`` bytes, looping over partial reads.

        Raises:
            IncompleteReadError: the stream ended first; ``partial`` holds what came.
            SocketTimeoutError: not all ``n`` bytes came in time; they stay buffered.
        """
        return self._receive(lambda: self._core.next_exactly(n), timeout)

    def receive_message(self, codec: Codec, *, timeout: TimeoutArg = DEFAULT) -> bytes | None:
        """Return the next message framed by ``codec``; None at a clean end of stream.

        Raises:
            MessageTooLargeError: the peer's message is over the codec's limit.
            IncompleteReadError: the stream ended inside a message.
            SocketTimeoutError: no whole message in time; received bytes stay buffered.
        """
        return self._receive(lambda: self._core.next_message(codec), timeout)

    def receive_line(
        self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH, timeout: TimeoutArg = DEFAULT
    ) -> bytes | None:
        """Return the next line without its LF or CRLF; None at a clean end of stream.

        A last line without a newline is returned when the stream ends.
        """
        return self.receive_message(LineCodec(max_line_length), timeout=timeout)

    # -- sending ---------------------------------------------------------

    def send_all(
        self, data: bytes | bytearray | memoryview, *, timeout: TimeoutArg = DEFAULT
    ) -> None:
        """Send every byte, looping over partial writes.

        Raises:
            SocketTimeoutError: the peer stopped reading; the message says how
                many bytes were sent before the time ran out.
            BrokenError: the peer reset the connection; some bytes may have gone.
        """
        deadline = self._deadline(timeout)
        self._core.check_send()
        view = memoryview(data).cast("B")
        sent = 0
        total = len(view)
        try:
            while sent < total:
                self._sock.settimeout(deadline.remaining())
                sent += self._sock.send(view[sent:])
        except OSError as exc:
            raise self._core.send_error(exc, deadline.timeout, sent, total) from exc
        finally:
            view.release()

    def send_message(self, codec: Codec, message: bytes, *, timeout: TimeoutArg = DEFAULT) -> None:
        """Frame ``message`` with ``codec`` and send all of it."""
        self.send_all(codec.encode(message), timeout=timeout)

    def shutdown_write(self) -> None:
        """Half-close: tell the peer no more data comes (its reads see end of stream).

        Receiving still works, so the reply to a request can be read after it;
        sending raises ``ClosedError``.

        Raises:
            UnsupportedError: the connection speaks TLS.
        """
        self._core.check_half_close(tls=isinstance(self._sock, ssl.SSLSocket))
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise self._core.half_close_error(exc) from exc
        self._core.write_shut = True

    def close(self) -> None:
        """Close the socket; safe to call more than once."""
        if not self._core.closed:
            self._core.closed = True
            self._sock.close()


class Listener(Closing):
    """A listening stream socket; ``accept`` returns ``Connection`` objects."""

    def __init__(self, sock: socket.socket, *, timeout: float | None = DEFAULT_IO_TIMEOUT) -> None:
        self._sock = sock
        self._closed = False
        #: The timeout given to accepted connections.
        self.connection_timeout = timeout
        #: The bound address, formatted.
        self.address = local_name(sock)
        #: The bound port (useful after binding port 0); None for Unix sockets.
        self.port = bound_port(sock)

    @property
    def socket(self) -> socket.socket:
        """The listening socket."""
        return self._sock

    def fileno(self) -> int:
        """The descriptor of the listening socket."""
        return self._sock.fileno()

    def accept(self, *, timeout: float | None = None) -> Connection:
        """Wait for a client (for ever unless ``timeout`` is given).

        Raises:
            SocketTimeoutError: no client within ``timeout`` seconds.
        """
        if self._closed:
            raise ClosedError(f"listener on {self.address} is already closed")
        try:
            self._sock.settimeout(timeout)
            sock, _ = self._sock.accept()
        except (TimeoutError, BlockingIOError) as exc:  # EAGAIN: timeout=0
            raise SocketTimeoutError(
                f"no client connected to {self.address} within {timeout:g} s",
                phase="accept",
                timeout=timeout,
            ) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="accept", where=self.address) from exc
        sock.settimeout(None)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Connection(sock, timeout=self.connection_timeout)

    def close(self) -> None:
        """Stop listening; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._sock.close()


def connect(
    endpoint: Endpoint | str,
    *,
    family: int = socket.AF_UNSPEC,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    wait_for_server: float = 0.0,
    proxy: Proxy | None = None,
) -> Connection:
    """Open a stream connection to ``endpoint`` (``host:port``, ``[v6]:port``, ``unix:/p``).

    Args:
        endpoint: where to connect.
        family: AF_UNSPEC, AF_INET or AF_INET6, to force one.
        connect_timeout: seconds to wait for the connection (and the TLS handshake).
        timeout: the default timeout of each later call on the connection.
        ssl_context: speak TLS with this context (``socketkit.tls.client_context``).
        server_hostname: the name to send (SNI) and verify; default: the host.
        wait_for_server: seconds during which a refused connect is tried again
            (a server that is still starting); 0: fail at once.
        proxy: reach ``endpoint`` through this SOCKS or HTTP proxy
            (``socketkit.proxy_client.Proxy``); TLS, if asked, is then
            spoken with the target, inside the tunnel.

    Raises:
        AddressError: malformed endpoint or unknown host.
        ConnectError: refused or unreachable (after ``wait_for_server``).
        ProxyError: the proxy did not open the tunnel (a ConnectError).
        TLSError: the TLS handshake failed (certificate, name, protocol).
        SocketTimeoutError: no answer within ``connect_timeout``.
    """
    target = as_endpoint(endpoint, default_host="127.0.0.1")
    first = b""
    if proxy is not None:
        sock, first = open_proxy_socket(
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
                sock = connect_socket(target, family=family, timeout=connect_timeout)
                break
            except ConnectError as exc:
                if not retry_refused(exc, deadline):
                    raise
            time.sleep(CONNECT_RETRY_INTERVAL)
    if ssl_context is not None:
        sock = handshake(
            sock,
            ssl_context,
            role="client",
            where=str(target),
            server_hostname=client_server_hostname(target, server_hostname),
            timeout=connect_timeout,
        )
    conn = Connection(sock, timeout=timeout)
    if first:
        conn._core.feed(first)  # the target's first bytes, come with the proxy's reply
    return conn


def open_listener(
    endpoint: Endpoint | str | int = 0,
    *,
    family: int = socket.AF_UNSPEC,
    backlog: int | None = None,
    reuse_port: bool = False,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
) -> Listener:
    """Bind and listen on ``endpoint``; a bare port listens on every interface.

    Args:
        endpoint: ``8080``, ``127.0.0.1:0``, ``[::1]:8080``, ``unix:/path``.
        family: AF_UNSPEC (dual stack where possible), AF_INET or AF_INET6.
        backlog: listen() backlog; None means the system maximum.
        reuse_port: share the port between processes (SO_REUSEPORT).
        timeout: the default timeout of accepted connections.

    Raises:
        ListenError: address in use, permission denied, unusable path.
    """
    target = as_endpoint(endpoint, default_host=None)
    sock = bind_socket(target, family=family, backlog=backlog, reuse_port=reuse_port)
    return Listener(sock, timeout=timeout)
