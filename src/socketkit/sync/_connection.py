"""Blocking stream connections (TCP, Unix, TLS-wrapped) and listeners.

Strategy: one ``ReceiveBuffer`` per connection holds bytes received but not
yet consumed; ``receive_exactly``, ``receive_message`` (any codec) and
``receive_some`` all drain it first, so mixing them never loses data. Every
call has a deadline for the whole call (not per recv), and every ``OSError``
is translated in ``_translate`` into the socketkit error tree.

``send_all`` loops over ``send`` instead of using ``sendall`` so that, when it
fails halfway, the error can say how many bytes went out.
"""

from __future__ import annotations

import socket
import ssl

from .._closing import Closing
from .._sockets import bind_socket, bound_port, connect_socket, local_name, peer_name
from .._timeouts import DEFAULT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, Deadline, TimeoutArg
from ..address import Endpoint, InetEndpoint, parse_endpoint
from ..errors import (
    BrokenError,
    ClosedError,
    IncompleteReadError,
    SocketkitError,
    SocketTimeoutError,
    UnsupportedError,
    timeout_error,
    translate_os_error,
)
from ..framing import Codec, LineCodec, ReceiveBuffer
from ..framing.codecs import DEFAULT_MAX_LINE_LENGTH

__all__ = ["Connection", "Listener", "connect", "open_listener"]

#: Bytes asked of one recv(): 64 KiB matches common socket buffer sizes.
RECEIVE_SIZE = 64 * 1024


def _as_endpoint(endpoint: Endpoint | str, default_host: str | None) -> Endpoint:
    if isinstance(endpoint, str):
        return parse_endpoint(endpoint, default_host=default_host)
    return endpoint


class Connection(Closing):
    """A connected stream socket with whole-message sends and receives.

    Use as a context manager, or call ``close()``. Not thread-safe: one
    reader and one writer thread at most, as with a plain socket.
    """

    def __init__(self, sock: socket.socket, *, timeout: float | None = DEFAULT_IO_TIMEOUT) -> None:
        self._sock = sock
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._closed = False
        self._write_shut = False
        #: Default timeout, in seconds, of each call on this connection.
        self.timeout = timeout
        #: The peer's address, formatted (``127.0.0.1:51234``, ``unix:/p``).
        self.peer = peer_name(sock)
        #: This side's address, formatted.
        self.local = local_name(sock)

    @property
    def socket(self) -> socket.socket:
        """The underlying socket (for options; don't read from it directly)."""
        return self._sock

    def fileno(self) -> int:
        """The descriptor: a socket is a file descriptor."""
        return self._sock.fileno()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Connection {self.local} -> {self.peer} {state}>"

    # -- helpers ---------------------------------------------------------

    def _deadline(self, timeout: TimeoutArg) -> Deadline:
        if self._closed:
            raise ClosedError(f"connection to {self.peer} is already closed")
        return Deadline(self.timeout if timeout is DEFAULT else timeout)

    def _translate(self, exc: OSError, phase: str, deadline: Deadline) -> SocketkitError:
        # BlockingIOError (EAGAIN) is a timeout too: once a deadline has run
        # out, settimeout(0.0) makes the socket non-blocking, and so does a
        # caller's timeout=0 ("only what is already there").
        if isinstance(exc, TimeoutError | BlockingIOError):
            return timeout_error(phase, self.peer, deadline.timeout)
        return translate_os_error(exc, phase=phase, where=self.peer)

    def _fill(self, deadline: Deadline) -> bool:
        """Receive once into the buffer; False at end of stream."""
        if self._eof:
            return False
        try:
            self._sock.settimeout(deadline.remaining())
            data = self._sock.recv(RECEIVE_SIZE)
        except OSError as exc:
            raise self._translate(exc, "receive", deadline) from exc
        if not data:
            self._eof = True
            return False
        self._buffer.feed(data)
        return True

    # -- receiving -------------------------------------------------------

    def receive_some(
        self, max_bytes: int = RECEIVE_SIZE, *, timeout: TimeoutArg = DEFAULT
    ) -> bytes:
        """Return what has arrived, at most ``max_bytes``; ``b""`` at end of stream.

        Raises:
            SocketTimeoutError: nothing arrived in time.
            BrokenError: the connection was reset.
        """
        deadline = self._deadline(timeout)
        if not self._buffer and not self._fill(deadline):
            return b""
        return self._buffer.extract(max_bytes)

    def receive_exactly(self, n: int, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Return exactly ``n`` bytes, looping over partial reads.

        Raises:
            IncompleteReadError: the stream ended first; ``partial`` holds what came.
            SocketTimeoutError: not all ``n`` bytes came in time; they stay buffered.
        """
        deadline = self._deadline(timeout)
        while len(self._buffer) < n:
            if not self._fill(deadline):
                partial = self._buffer.extract_all()
                raise IncompleteReadError(
                    f"{self.peer} closed the connection after {len(partial)} of {n} bytes",
                    partial=partial,
                    expected=n,
                )
        return self._buffer.extract(n)

    def receive_message(self, codec: Codec, *, timeout: TimeoutArg = DEFAULT) -> bytes | None:
        """Return the next message framed by ``codec``; None at a clean end of stream.

        Raises:
            MessageTooLargeError: the peer's message is over the codec's limit.
            IncompleteReadError: the stream ended inside a message.
            SocketTimeoutError: no whole message in time; received bytes stay buffered.
        """
        deadline = self._deadline(timeout)
        while True:
            message = codec.maybe_decode(self._buffer)
            if message is not None:
                return message
            if not self._fill(deadline):
                return codec.decode_eof(self._buffer)

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
        if self._write_shut:
            raise ClosedError(f"cannot send to {self.peer}: this side already shut down writing")
        view = memoryview(data).cast("B")
        sent = 0
        total = len(view)
        try:
            while sent < total:
                self._sock.settimeout(deadline.remaining())
                sent += self._sock.send(view[sent:])
        except OSError as exc:
            error = self._translate(exc, "send", deadline)
            if total:
                error.message += f" ({sent} of {total} bytes sent)"
            raise error from exc
        finally:
            view.release()

    def send_message(self, codec: Codec, message: bytes, *, timeout: TimeoutArg = DEFAULT) -> None:
        """Frame ``message`` with ``codec`` and send all of it."""
        self.send_all(codec.encode(message), timeout=timeout)

    def shutdown_write(self) -> None:
        """Half-close: tell the peer no more data comes (its reads see end of stream).

        Receiving still works, so the reply to a request can be read after it;
        sending raises ``ClosedError``.
        """
        if self._closed:
            raise ClosedError(f"connection to {self.peer} is already closed")
        if isinstance(self._sock, ssl.SSLSocket):
            # SSLSocket.shutdown drops the TLS state, and unwrap() loses data
            # still in flight from the peer: neither is a half-close.
            raise UnsupportedError(
                f"half-close over TLS is not supported on the connection to {self.peer}"
            )
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise BrokenError(
                f"cannot half-close the connection to {self.peer}: {exc.strerror}", errno=exc.errno
            ) from exc
        self._write_shut = True

    def close(self) -> None:
        """Close the socket; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._sock.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    @property
    def at_eof(self) -> bool:
        """True once the peer's end of stream was seen and the buffer is empty."""
        return self._eof and not self._buffer


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
) -> Connection:
    """Open a stream connection to ``endpoint`` (``host:port``, ``[v6]:port``, ``unix:/p``).

    Args:
        endpoint: where to connect.
        family: AF_UNSPEC, AF_INET or AF_INET6, to force one.
        connect_timeout: seconds to wait for the connection (and the TLS handshake).
        timeout: the default timeout of each later call on the connection.
        ssl_context: speak TLS with this context (``socketkit.tls.client_context``).
        server_hostname: the name to send (SNI) and verify; default: the host.

    Raises:
        AddressError: malformed endpoint or unknown host.
        ConnectError: refused or unreachable.
        TLSError: the TLS handshake failed (certificate, name, protocol).
        SocketTimeoutError: no answer within ``connect_timeout``.
    """
    target = _as_endpoint(endpoint, default_host="127.0.0.1")
    sock = connect_socket(target, family=family, timeout=connect_timeout)
    if ssl_context is not None:
        from ..tls import handshake

        default_name = target.host if isinstance(target, InetEndpoint) else None
        sock = handshake(
            sock,
            ssl_context,
            role="client",
            where=str(target),
            server_hostname=server_hostname or default_name,
            timeout=connect_timeout,
        )
    return Connection(sock, timeout=timeout)


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
    if isinstance(endpoint, int):
        endpoint = InetEndpoint(None, endpoint)
    target = _as_endpoint(endpoint, default_host=None)
    sock = bind_socket(target, family=family, backlog=backlog, reuse_port=reuse_port)
    return Listener(sock, timeout=timeout)
