"""One exception tree for everything socketkit raises.

Every error a user can meet reads as one line on a terminal: what happened,
where, and a hint. Lower-level causes are chained (``raise ... from exc``) and
an ``errno`` is kept when there was one.

A hint that names a remedy the caller controls is a *kind*, not text:
``exc.hint`` is one of ``HINTS`` (``"insecure"``: certificate verification can
be turned off), and ``str(exc)`` adds the library's wording of it, in the
terms of its own settings. Programs on the library word it in theirs: the
command line says ``(use --insecure to skip verification)``
(``socketkit.cli._render``). ``exc.message`` is the line without the hint.

The CLI catches ``SocketkitError`` once, prints it and exits with
``exc.exit_code``::

    SocketkitError                      exit 1
    ├── UsageError                      exit 2   bad command-line input
    ├── SettingError (ValueError)       exit 2   a setting the library does not know or take
    ├── AddressError (ValueError)       exit 2   malformed endpoint, bad port
    │   └── HostNotFoundError           exit 2   name resolution failed
    ├── ConnectError (ConnectionError)  exit 3   refused, unreachable (also a UDP port)
    │   ├── TLSError                    exit 3   TLS handshake or certificate verification failed
    │   └── ProxyError                  exit 3   a SOCKS or HTTP proxy did not open the tunnel
    │       ├── ProxyRefusedError       exit 3   the proxy refused (not allowed, general failure)
    │       ├── ProxyAuthError          exit 3   authentication required or failed
    │       ├── ProxyTargetError        exit 3   the proxy could not reach the target
    │       └── ProxyProtocolError      exit 3   the proxy speaks another protocol (also a FramingError)
    ├── ListenError                     exit 4   address in use, permission, bad path
    ├── SocketTimeoutError (TimeoutError) exit 5 per phase: connect, send, receive, accept
    ├── ClosedError                     exit 1   *you* closed it and used it again
    ├── BrokenError (ConnectionError)   exit 6   the peer or the network ended it
    │   └── IncompleteReadError         exit 6   end of stream mid-message (keeps the bytes)
    ├── FramingError                    exit 7   the peer (or caller) broke the framing rules
    │   └── MessageTooLargeError        exit 7   over the configured maximum
    └── UnsupportedError                exit 8   not available on this platform

The exit codes are documented in the README; they are a public interface.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "HINTS",
    "AddressError",
    "BrokenError",
    "ClosedError",
    "ConnectError",
    "FramingError",
    "HostNotFoundError",
    "IncompleteReadError",
    "ListenError",
    "MessageTooLargeError",
    "ProxyAuthError",
    "ProxyError",
    "ProxyProtocolError",
    "ProxyRefusedError",
    "ProxyTargetError",
    "SettingError",
    "SocketTimeoutError",
    "SocketkitError",
    "TLSError",
    "UnsupportedError",
    "UsageError",
    "timeout_error",
    "translate_os_error",
]


#: The hints an error may carry (``SocketkitError.hint``), worded in the
#: library's terms. Each ends the line; a program words them in its own terms.
HINTS = {
    # A certificate the client could not verify.
    "insecure": " (TLSSettings(verify=False) skips verification)",
    # A self-signed certificate: trust its CA, or turn verification off.
    "ca-file": " (trust its CA with TLSSettings(cafile=...), or verify=False skips verification)",
    # A TLS server without a certificate.
    "certificate": ": TLSSettings(certfile=..., keyfile=...) or TLSSettings(self_signed=True)",
    # A certificate file without its key, and no key file.
    "key": ": give it with TLSSettings(keyfile=...)",
    # A bench peer that is no iperf3 server but may echo.
    "latency": " (the latency mode measures against any echo server)",
    # A latency test against a peer that does not echo.
    "latency-peer": ": the latency mode needs an echo service or socketkit bench server",
}


class SocketkitError(Exception):
    """Root of every socketkit error. ``str(exc)`` is one line for a terminal.

    Attributes:
        message: what failed, and where, without the hint.
        hint: what the caller can do about it, as a key of ``HINTS``, or None.
        errno: the system's error number, when a system call failed.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, errno: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.hint = hint

    def __str__(self) -> str:
        return self.message + HINTS.get(self.hint or "", "")


class UsageError(SocketkitError):
    """The command line or a call's arguments make no sense."""

    exit_code = 2


class SettingError(SocketkitError, ValueError):
    """A setting a library call does not know or take: an unknown codec name, a bad limit."""

    exit_code = 2


class AddressError(SocketkitError, ValueError):
    """An endpoint could not be parsed: malformed address, port outside 0..65535."""

    exit_code = 2


class HostNotFoundError(AddressError):
    """Name resolution (getaddrinfo) found no address for a host."""


class ConnectError(SocketkitError, ConnectionError):
    """A connection could not be made: refused, unreachable, reset during connect."""

    exit_code = 3


class TLSError(ConnectError):
    """A TLS handshake failed: certificate verification, protocol mismatch, alert."""


class ListenError(SocketkitError):
    """A socket could not be bound or listened on: address in use, permission, path."""

    exit_code = 4


class SocketTimeoutError(SocketkitError, TimeoutError):
    """A blocking call ran out of time. ``phase`` says which one."""

    exit_code = 5

    def __init__(self, message: str, *, phase: str, timeout: float | None) -> None:
        super().__init__(message, errno=_errno.ETIMEDOUT)
        self.phase = phase
        self.timeout = timeout


class ClosedError(SocketkitError):
    """This side already closed the connection and then used it."""


class BrokenError(SocketkitError, ConnectionError):
    """The peer or the network ended the connection (reset, broken pipe)."""

    exit_code = 6


class IncompleteReadError(BrokenError):
    """The stream ended before a whole message arrived. ``partial`` keeps what did."""

    def __init__(self, message: str, *, partial: bytes, expected: int | None = None) -> None:
        super().__init__(message)
        self.partial = partial
        self.expected = expected


class FramingError(SocketkitError):
    """Bytes that break the framing rules. ``remote`` is True when the peer sent them."""

    exit_code = 7

    def __init__(self, message: str, *, remote: bool = True) -> None:
        super().__init__(message)
        self.remote = remote


class MessageTooLargeError(FramingError):
    """A message over the configured maximum (a line, a frame, a datagram)."""

    def __init__(self, message: str, *, size: int | None, limit: int, remote: bool = True) -> None:
        super().__init__(message, remote=remote)
        self.size = size
        self.limit = limit


class ProxyError(ConnectError):
    """A SOCKS or HTTP proxy did not open the tunnel to the target.

    Attributes:
        protocol: the proxy protocol spoken: "SOCKS4", "SOCKS5" or "HTTP".
        reply: the proxy's reply code (SOCKS reply byte, HTTP status), or
            None when it sent none that could be read.
        proxy: the proxy's address, when the caller knew it.
    """

    def __init__(
        self, message: str, *, protocol: str, reply: int | None = None, proxy: str | None = None
    ) -> None:
        super().__init__(message)
        self.protocol = protocol
        self.reply = reply
        #: The proxy's address (``host:port``), once known.
        self.proxy = proxy


class ProxyRefusedError(ProxyError):
    """The proxy refused the request: not allowed by its rules, or a general failure."""


class ProxyAuthError(ProxyError):
    """The proxy wants credentials we lack, or rejected the ones we sent."""


class ProxyTargetError(ProxyError):
    """The proxy could not reach the target: unreachable, refused, timed out."""


class ProxyProtocolError(ProxyError, FramingError):
    """The proxy's reply breaks the protocol: it speaks another one, or garbles this one.

    Both a ``ProxyError`` (what the user tried failed at the proxy) and a
    ``FramingError`` with ``remote`` True (the peer broke the framing rules).
    """


class UnsupportedError(SocketkitError):
    """A feature this platform lacks (AF_UNIX on old Windows, SO_REUSEPORT, ...)."""

    exit_code = 8


def timeout_error(phase: str, where: str, timeout: float | None = None) -> SocketTimeoutError:
    """The one wording of a timed-out call, for every layer.

    ``receive from 127.0.0.1:8080 timed out after 5 s``; a connect adds a
    hint, since a host that never answers is the usual cause.
    """
    direction = "from" if phase == "receive" else "to"
    after = "" if timeout is None else f" after {timeout:g} s"
    hint = " (is the host up?)" if phase == "connect" else ""
    return SocketTimeoutError(
        f"{phase} {direction} {where} timed out{after}{hint}", phase=phase, timeout=timeout
    )


def _strerror(exc: OSError) -> str:
    if exc.errno is not None:
        try:
            import os

            return os.strerror(exc.errno).lower()
        except ValueError:
            pass
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def translate_os_error(exc: OSError, *, phase: str, where: str) -> SocketkitError:
    """Turn an ``OSError`` from a socket call into the matching socketkit error.

    This is the one place where errno values become user-facing messages, so
    that the blocking and asyncio layers speak the same language.

    Args:
        exc: the error the socket call raised.
        phase: what was being done: "connect", "bind", "listen", "accept",
            "send", "receive", "resolve", "close".
        where: the endpoint, already formatted (``127.0.0.1:8080``, ``unix:/p``).

    Returns:
        The error to raise (the caller chains it with ``from exc``).
    """
    if isinstance(exc, SocketkitError):
        return exc
    code = exc.errno
    if isinstance(exc, TimeoutError) or code == _errno.ETIMEDOUT:
        return timeout_error(phase, where)
    if phase == "connect":
        if code == _errno.ECONNREFUSED:
            return ConnectError(
                f"connection refused by {where} (is a server listening?)", errno=code
            )
        if code in (_errno.ENOENT,):
            return ConnectError(f"no socket at {where} (is a server listening?)", errno=code)
        if code in (_errno.ENETUNREACH, _errno.EHOSTUNREACH):
            return ConnectError(f"{where} is unreachable: {_strerror(exc)}", errno=code)
        if code in (_errno.EACCES, _errno.EPERM):
            return ConnectError(f"cannot connect to {where}: permission denied", errno=code)
        if code == _errno.EAFNOSUPPORT:
            return UnsupportedError(
                f"cannot connect to {where}: address family not supported here", errno=code
            )
        return ConnectError(f"cannot connect to {where}: {_strerror(exc)}", errno=code)
    if phase in ("bind", "listen"):
        if code == _errno.EADDRINUSE:
            return ListenError(
                f"address already in use: {where} (another server is running there?)",
                errno=code,
            )
        if code in (_errno.EACCES, _errno.EPERM):
            return ListenError(
                f"permission denied to bind {where} (ports below 1024 need privileges)",
                errno=code,
            )
        if code == _errno.EADDRNOTAVAIL:
            return ListenError(f"cannot bind {where}: no such local address", errno=code)
        if code == _errno.EAFNOSUPPORT:
            return UnsupportedError(
                f"cannot bind {where}: address family not supported here", errno=code
            )
        return ListenError(f"cannot {phase} on {where}: {_strerror(exc)}", errno=code)
    if code == _errno.EMSGSIZE:
        too_large = MessageTooLargeError(
            f"message too large for one datagram to {where}",
            size=None,
            limit=0,
            remote=False,
        )
        too_large.errno = code  # FramingError's constructor takes no errno
        return too_large
    if code in (_errno.ECONNREFUSED,):
        # ICMP port unreachable for a datagram: the same as a refused
        # connection to the user (exit 3), whatever call reported it.
        return ConnectError(
            f"{phase}: {where} refused the datagram (is a server listening?)", errno=code
        )
    if code in (_errno.ECONNRESET, _errno.EPIPE, _errno.ECONNABORTED, _errno.ENOTCONN) or (
        isinstance(exc, ConnectionError)
    ):
        return BrokenError(
            f"connection to {where} broken during {phase}: {_strerror(exc)}", errno=code
        )
    return SocketkitError(f"{phase} on {where} failed: {_strerror(exc)}", errno=code)
