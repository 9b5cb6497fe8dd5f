"""Blocking datagram sockets (UDP, Unix datagram).

One receive is one datagram. A datagram longer than the receive size would
be silently cut by the kernel; we ask for one byte more than the maximum and
report a ``MessageTooLargeError`` when that byte is used, so truncation is
never silent. Sends larger than a datagram can carry fail before any I/O.

UDP loses datagrams, so ``request`` sends, waits up to ``timeout`` for the
answer and sends again up to ``retries`` more times.
"""

from __future__ import annotations

import socket

from .._closing import Closing
from .._sockets import MAX_UDP_PAYLOAD, bind_socket, bound_port, connect_socket, local_name
from .._timeouts import DEFAULT, DEFAULT_IO_TIMEOUT, Deadline, TimeoutArg
from ..address import Endpoint, as_endpoint, format_sockaddr
from ..errors import (
    ClosedError,
    ConnectError,
    MessageTooLargeError,
    SocketkitError,
    SocketTimeoutError,
    translate_os_error,
)

__all__ = [
    "MAX_UDP_PAYLOAD",
    "DatagramSocket",
    "open_datagram_client",
    "open_datagram_server",
]

#: Default largest datagram accepted: the most UDP over IPv4 can carry.
DEFAULT_MAX_DATAGRAM_SIZE = MAX_UDP_PAYLOAD


class DatagramSocket(Closing):
    """A datagram socket: bound (a server) or connected to one peer (a client)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = DEFAULT_IO_TIMEOUT,
        max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE,
        peer: str | None = None,
    ) -> None:
        self._sock = sock
        self._closed = False
        #: Default timeout, in seconds, of each receive.
        self.timeout = timeout
        #: The largest datagram sent or accepted, in bytes.
        self.max_datagram_size = max_datagram_size
        #: This side's address, formatted.
        self.local = local_name(sock)
        #: The bound port; None for Unix sockets.
        self.port = bound_port(sock)
        #: The connected peer, formatted, or None for an unconnected socket.
        self.peer = peer

    @property
    def socket(self) -> socket.socket:
        """The underlying socket."""
        return self._sock

    def fileno(self) -> int:
        """The descriptor."""
        return self._sock.fileno()

    def _check(self, data: bytes, where: str) -> None:
        if self._closed:
            raise ClosedError(f"datagram socket {self.local} is already closed")
        if len(data) > self.max_datagram_size:
            raise MessageTooLargeError(
                f"message of {len(data)} bytes is larger than one datagram to {where} "
                f"can carry ({self.max_datagram_size} bytes at most)",
                size=len(data),
                limit=self.max_datagram_size,
                remote=False,
            )

    def send(self, data: bytes) -> None:
        """Send one datagram to the connected peer."""
        where = self.peer or "?"
        self._check(data, where)
        try:
            self._sock.send(data)
        except OSError as exc:
            raise translate_os_error(exc, phase="send", where=where) from exc

    def send_to(self, data: bytes, address: object) -> None:
        """Send one datagram to ``address`` (a sockaddr, as ``receive_from`` gives)."""
        where = format_sockaddr(address)
        self._check(data, where)
        try:
            self._sock.sendto(data, address)  # type: ignore[call-overload]
        except OSError as exc:
            raise translate_os_error(exc, phase="send", where=where) from exc

    def receive_from(self, *, timeout: TimeoutArg = DEFAULT) -> tuple[bytes, object]:
        """Wait for one datagram; return it and the sender's address.

        Raises:
            SocketTimeoutError: nothing arrived in time.
            MessageTooLargeError: the datagram was over ``max_datagram_size``
                (it is consumed and dropped).
        """
        if self._closed:
            raise ClosedError(f"datagram socket {self.local} is already closed")
        deadline = Deadline(self.timeout if timeout is DEFAULT else timeout)
        try:
            self._sock.settimeout(deadline.remaining())
            data, address = self._sock.recvfrom(self.max_datagram_size + 1)
        except (TimeoutError, BlockingIOError) as exc:  # EAGAIN: timeout=0
            raise SocketTimeoutError(
                f"no datagram {'from ' + self.peer if self.peer else 'on ' + self.local} "
                f"within {deadline.timeout:g} s",
                phase="receive",
                timeout=deadline.timeout,
            ) from exc
        except OSError as exc:
            raise translate_os_error(exc, phase="receive", where=self.peer or self.local) from exc
        if len(data) > self.max_datagram_size:
            raise MessageTooLargeError(
                f"datagram from {format_sockaddr(address)} is over the limit of "
                f"{self.max_datagram_size} bytes (dropped)",
                size=None,
                limit=self.max_datagram_size,
            )
        return data, address

    def receive(self, *, timeout: TimeoutArg = DEFAULT) -> bytes:
        """Wait for one datagram and return it."""
        return self.receive_from(timeout=timeout)[0]

    def request(self, data: bytes, *, timeout: float | None = 2.0, retries: int = 2) -> bytes:
        """Send a datagram to the connected peer and wait for the answer, with retries.

        Args:
            data: the request.
            timeout: seconds to wait for an answer to each try.
            retries: how many times to send again after a try goes unanswered.

        Raises:
            SocketTimeoutError: no answer after ``1 + retries`` tries.
            ConnectError: the peer's port is closed (ICMP port unreachable) on every try.
        """
        last: SocketkitError | None = None
        tries = 1 + max(0, retries)
        for _ in range(tries):
            self.send(data)
            try:
                return self.receive(timeout=timeout)
            except (SocketTimeoutError, ConnectError) as exc:
                last = exc
        where = self.peer or "?"
        if isinstance(last, ConnectError):
            raise ConnectError(
                f"no UDP server at {where}: port unreachable after {tries} "
                f"{'try' if tries == 1 else 'tries'} (is a server running?)",
                errno=last.errno,
            ) from last
        raise SocketTimeoutError(
            f"no reply from {where} after {tries} {'try' if tries == 1 else 'tries'} "
            f"of {timeout:g} s (is a server running? datagrams may be lost)",
            phase="receive",
            timeout=timeout,
        ) from last

    def close(self) -> None:
        """Close the socket; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._sock.close()


def open_datagram_server(
    endpoint: Endpoint | str | int = 0,
    *,
    family: int = socket.AF_UNSPEC,
    reuse_port: bool = False,
    timeout: float | None = None,
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE,
) -> DatagramSocket:
    """Bind a datagram socket (``8080``, ``127.0.0.1:0``, ``unix:/path``).

    Raises:
        ListenError: address in use, permission denied, unusable path.
    """
    endpoint = as_endpoint(endpoint, default_host=None)
    sock = bind_socket(endpoint, type=socket.SOCK_DGRAM, family=family, reuse_port=reuse_port)
    return DatagramSocket(sock, timeout=timeout, max_datagram_size=max_datagram_size)


def open_datagram_client(
    endpoint: Endpoint | str,
    *,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = DEFAULT_IO_TIMEOUT,
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE,
) -> DatagramSocket:
    """A datagram socket connected to one peer: ``send``, ``receive``, ``request``.

    Raises:
        AddressError: malformed endpoint or unknown host.
    """
    endpoint = as_endpoint(endpoint, default_host="127.0.0.1")
    sock = connect_socket(endpoint, type=socket.SOCK_DGRAM, family=family)
    return DatagramSocket(
        sock, timeout=timeout, max_datagram_size=max_datagram_size, peer=str(endpoint)
    )
