"""The seam where sockets are made: create, set options, bind, listen, connect.

Both I/O flavours (``sync`` and ``aio``) and every program get their sockets
here, so that address reuse, dual-stack listening, stale Unix socket files and
error translation are decided once. Sockets are returned in blocking mode;
the asyncio layer switches them to non-blocking itself.

Platform evidence:
- SO_REUSEADDR on POSIX lets a restarted server bind while old connections
  sit in TIME_WAIT. On Windows it means "steal a port in use", so there we
  set SO_EXCLUSIVEADDRUSE instead (the documented Winsock way to be safe;
  TIME_WAIT does not block a rebind there).
- Dual stack: an AF_INET6 socket with IPV6_V6ONLY off accepts IPv4 clients as
  IPv4-mapped addresses. ``socket.has_dualstack_ipv6()`` tells whether the OS
  allows it (not on old Windows, not on kernels without IPv6).
- A Unix socket file outlives its server. Before binding, a path that is a
  socket nobody answers on (ECONNREFUSED) is removed; a live one is "in use".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .address import (
    Endpoint,
    InetEndpoint,
    UnixEndpoint,
    format_sockaddr,
    require_unix_sockets,
    resolve,
)
from .errors import (
    ConnectError,
    ListenError,
    SocketkitError,
    UnsupportedError,
    timeout_error,
    translate_os_error,
)

__all__ = [
    "CONNECT_RETRY_INTERVAL",
    "MAX_UDP_PAYLOAD",
    "ConnectAttempt",
    "Connecting",
    "aconnect_socket",
    "bind_socket",
    "bound_port",
    "connect_failure",
    "connect_socket",
    "listen_backlog",
    "local_name",
    "peer_name",
    "plain_sockets",
    "retry_refused",
    "set_socket_factory",
]

_WINDOWS = sys.platform == "win32"

#: The largest UDP payload over IPv4: 65535 - 20 (IP header) - 8 (UDP header).
MAX_UDP_PAYLOAD = 65507

SocketFactory = Callable[[int, int, int], socket.socket]
#: Makes every socket of the library (``socketkit.trace`` swaps in a traced one).
_new_socket: SocketFactory = socket.socket


def plain_sockets() -> bool:
    """True unless another factory (``--trace``) makes the library's sockets."""
    return _new_socket is socket.socket


def set_socket_factory(factory: SocketFactory | None) -> SocketFactory:
    """Make the library's sockets with ``factory`` (None: plain); return the previous one."""
    global _new_socket
    previous, _new_socket = _new_socket, factory or socket.socket
    return previous


#: listen()'s backlog is a C int.
_MAX_BACKLOG = 2**31 - 1


def listen_backlog(requested: int | None) -> int:
    """The backlog to pass to listen(): the request, or the system maximum.

    A large default lets a burst of simultaneous connects wait in the kernel
    instead of losing SYNs; the kernel caps it at net.core.somaxconn anyway.
    A request beyond a C int is capped too (listen() would raise
    OverflowError: ``--backlog 99999999999999`` means "as many as allowed").
    """
    if requested is not None:
        return min(max(0, requested), _MAX_BACKLOG)
    return max(128, socket.SOMAXCONN)


def _set_reuse(sock: socket.socket, reuse_port: bool) -> None:
    if _WINDOWS:
        opt = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
        if opt is not None:
            sock.setsockopt(socket.SOL_SOCKET, opt, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        opt = getattr(socket, "SO_REUSEPORT", None)
        if opt is None:
            raise UnsupportedError(f"SO_REUSEPORT is not available on {sys.platform}")
        sock.setsockopt(socket.SOL_SOCKET, opt, 1)


def _unix_socket_is_live(path: str, type: int) -> bool | None:
    """Probe the socket file at ``path`` by connecting to it.

    True: something answers; False: nobody does (ECONNREFUSED, a stale
    file); None: cannot tell (permission, a full backlog).

    The probe uses the type being bound first, then the other: connecting a
    stream socket to a datagram socket's file fails with EPROTOTYPE whether
    or not that socket is alive, so a stream-only probe cannot tell a live
    datagram server from a dead one.
    """
    other = socket.SOCK_DGRAM if type == socket.SOCK_STREAM else socket.SOCK_STREAM
    for probe_type in (type, other):
        probe = _new_socket(socket.AF_UNIX, probe_type, 0)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except ConnectionRefusedError:
            return False
        except OSError as exc:
            if exc.errno == errno.EPROTOTYPE:
                continue
            return None
        else:
            return True
        finally:
            probe.close()
    return None


def _remove_stale_unix_socket(path: str, type: int = socket.SOCK_STREAM) -> None:
    if path.startswith("@"):
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ListenError(f"cannot use unix:{path}: {exc.strerror}", errno=exc.errno) from exc
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"cannot bind unix:{path}: a file that is not a socket is there")
    live = _unix_socket_is_live(path, type)
    if live:
        raise ListenError(f"address already in use: unix:{path} (a server is listening there)")
    if live is False:
        with contextlib.suppress(FileNotFoundError):  # another process beat us to it
            os.unlink(path)
    # None: leave the file; bind() reports what is wrong with it.


def _bind_addresses(
    endpoint: InetEndpoint, family: int, type: int
) -> list[tuple[int, tuple[str, int] | tuple[str, int, int, int], bool]]:
    """Addresses to try binding, each with whether to switch dual stack on."""
    if endpoint.host is None or endpoint.host in ("", "*"):
        port = endpoint.port
        if family == socket.AF_INET:
            return [(socket.AF_INET, ("0.0.0.0", port), False)]
        if family == socket.AF_INET6:
            return [(socket.AF_INET6, ("::", port, 0, 0), False)]
        if socket.has_ipv6 and socket.has_dualstack_ipv6():
            return [
                (socket.AF_INET6, ("::", port, 0, 0), True),
                (socket.AF_INET, ("0.0.0.0", port), False),
            ]
        return [(socket.AF_INET, ("0.0.0.0", port), False)]
    found = resolve(endpoint, family=family, type=type, passive=True)
    return [(r.family, r.sockaddr, False) for r in found]


def bind_socket(
    endpoint: Endpoint,
    *,
    type: int = socket.SOCK_STREAM,
    family: int = socket.AF_UNSPEC,
    backlog: int | None = None,
    reuse_port: bool = False,
    listen: bool = True,
) -> socket.socket:
    """Create a socket bound to ``endpoint``; stream sockets are also listening.

    Args:
        endpoint: where to bind; an ``InetEndpoint`` with host None binds every
            interface (dual-stack when the OS allows and ``family`` is unspecified).
        type: SOCK_STREAM (a listener) or SOCK_DGRAM.
        family: AF_UNSPEC, AF_INET or AF_INET6.
        backlog: listen() backlog; None means the system maximum.
        reuse_port: set SO_REUSEPORT so several processes share the port.
        listen: call listen() on a stream socket (False only reserves the port).

    Raises:
        ListenError: the address is in use, not local, or not permitted.
        AddressError: the host does not resolve.
        UnsupportedError: the platform lacks the family or option.
    """
    if isinstance(endpoint, UnixEndpoint):
        require_unix_sockets()
        _remove_stale_unix_socket(endpoint.path, type)
        sock = _new_socket(socket.AF_UNIX, type, 0)
        try:
            sock.bind(endpoint.sockaddr)
            if type == socket.SOCK_STREAM and listen:
                sock.listen(listen_backlog(backlog))
        except OSError as exc:
            sock.close()
            raise _bind_error(exc, str(endpoint)) from exc
        return sock

    last: SocketkitError | None = None
    for fam, sockaddr, dual in _bind_addresses(endpoint, family, type):
        try:
            sock = _new_socket(fam, type, 0)
        except OSError as exc:
            last = translate_os_error(exc, phase="bind", where=format_sockaddr(sockaddr))
            continue
        try:
            _set_reuse(sock, reuse_port)
            if fam == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
            sock.bind(sockaddr)
            if type == socket.SOCK_STREAM and listen:
                sock.listen(listen_backlog(backlog))
        except SocketkitError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            where = str(endpoint) if endpoint.host else f"port {endpoint.port} on every interface"
            last = _bind_error(exc, where)
            if exc.errno == errno.EADDRINUSE:
                break
            continue
        return sock
    assert last is not None
    raise last


def _bind_error(exc: OSError, where: str) -> SocketkitError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EROFS):
        return ListenError(
            f"cannot bind {where}: {os.strerror(exc.errno).lower()}", errno=exc.errno
        )
    return translate_os_error(exc, phase="bind", where=where)


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    """One address to try when connecting an endpoint."""

    family: int
    type: int
    proto: int
    sockaddr: str | tuple[str, int] | tuple[str, int, int, int]
    #: The address, formatted, when it came from resolving the endpoint.
    address: str | None


class Connecting:
    """Connecting one endpoint: the addresses to try, a socket each, the last failure.

    Both layers drive it the same way and differ only in the connect call
    (blocking with a timeout here, ``loop.sock_connect`` in ``socketkit.aio``)::

        connecting = Connecting(endpoint, timeout=...)
        for attempt in connecting.attempts():
            with connecting.trying(attempt) as sock:
                sock.connect(attempt.sockaddr)
                return connecting.connected(attempt, sock)
        raise connecting.failure()
    """

    __slots__ = ("_endpoint", "_family", "_last", "_source", "_timeout", "_type")

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        type: int = socket.SOCK_STREAM,
        family: int = socket.AF_UNSPEC,
        timeout: float | None = None,
        source: tuple[str | None, int] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._type = type
        self._family = family
        self._timeout = timeout
        #: (address or None for any, port or 0) to bind before connecting
        #: (netcat's ``-s``/``-p``); an IP socket only.
        self._source = source
        self._last: SocketkitError | None = None

    @property
    def resolving(self) -> bool:
        """True when ``attempts()`` asks the resolver (a host name, not an address literal)."""
        host = self._endpoint.host if isinstance(self._endpoint, InetEndpoint) else None
        return host is not None and host != "" and not _is_numeric(host)

    def attempts(self) -> list[ConnectAttempt]:
        """The addresses to try, in order (resolving a host name blocks).

        Raises:
            ConnectError: no host given.
            AddressError: the host does not resolve.
            UnsupportedError: Unix sockets (or Unix datagram clients) missing here.
        """
        endpoint, type = self._endpoint, self._type
        if isinstance(endpoint, UnixEndpoint):
            require_unix_sockets()
            if type == socket.SOCK_DGRAM and not sys.platform.startswith("linux"):
                raise UnsupportedError("Unix datagram clients need Linux's autobind here")
            return [ConnectAttempt(socket.AF_UNIX, type, 0, endpoint.sockaddr, None)]
        if endpoint.host is None:
            raise ConnectError("cannot connect: no host given")
        found = resolve(endpoint, family=self._family, type=type)
        return [ConnectAttempt(a.family, a.type, a.proto, a.sockaddr, str(a)) for a in found]

    @contextlib.contextmanager
    def trying(self, attempt: ConnectAttempt) -> Iterator[socket.socket]:
        """A socket for ``attempt``; an OSError in the block closes it and is remembered.

        Anything else (a cancellation, Ctrl-C) closes it and propagates.

        Raises:
            SocketkitError: socket(2) (or a Unix datagram client's autobind)
                failed (EMFILE, ENFILE, ENOBUFS...), errno kept.
        """
        try:
            sock = _new_socket(attempt.family, attempt.type, attempt.proto)
        except OSError as exc:
            raise translate_os_error(exc, phase="connect", where=str(self._endpoint)) from exc
        if self._source is not None and attempt.family in (socket.AF_INET, socket.AF_INET6):
            self._bind_source(sock, attempt.family)
        try:
            if (
                attempt.family == getattr(socket, "AF_UNIX", None)
                and attempt.type == socket.SOCK_DGRAM
            ):
                sock.bind("")  # Linux autobind: an abstract address the server can answer
            yield sock
        except OSError as exc:
            sock.close()
            self._last = connect_failure(exc, self._endpoint, attempt.address, self._timeout)
        except BaseException:
            sock.close()
            raise

    def _bind_source(self, sock: socket.socket, family: int) -> None:
        """Bind the source address and port; a failure there ends the connect (it
        would fail the same way at every address).

        Raises:
            SocketkitError: the address is not local, or the port is taken (errno kept).
        """
        assert self._source is not None
        host, port = self._source
        if host is None:
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        try:
            if port:
                # A source port reused right after an earlier connection from it
                # (TIME_WAIT) binds again, as netcat allows.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise translate_os_error(
                exc, phase="bind", where=f"source address {format_sockaddr((host, port))}"
            ) from exc

    def connected(self, attempt: ConnectAttempt, sock: socket.socket) -> socket.socket:
        """Options set once ``attempt`` has connected; returns ``sock``."""
        if attempt.type == socket.SOCK_STREAM and attempt.family in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            # Small request/response exchanges should not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def failure(self) -> SocketkitError:
        """Why the last attempt failed (once every attempt has)."""
        assert self._last is not None
        return self._last


def connect_socket(
    endpoint: Endpoint,
    *,
    type: int = socket.SOCK_STREAM,
    family: int = socket.AF_UNSPEC,
    timeout: float | None = None,
    source: tuple[str | None, int] | None = None,
) -> socket.socket:
    """Create a socket connected to ``endpoint``, trying each resolved address
    (from the local ``source`` address and port, when given).

    For SOCK_DGRAM, "connected" fixes the peer address so ``send``/``recv``
    work and ICMP errors (port unreachable) are reported.

    Raises:
        ConnectError: refused or unreachable at every address.
        SocketTimeoutError: no answer within ``timeout`` seconds.
        AddressError: the host does not resolve.
    """
    connecting = Connecting(endpoint, type=type, family=family, timeout=timeout, source=source)
    for attempt in connecting.attempts():
        with connecting.trying(attempt) as sock:
            sock.settimeout(timeout)
            sock.connect(attempt.sockaddr)
            sock.settimeout(None)
            return connecting.connected(attempt, sock)
    raise connecting.failure()


#: Seconds between two connects while waiting for a server that is starting.
CONNECT_RETRY_INTERVAL = 0.05


def retry_refused(exc: ConnectError, deadline: float) -> bool:
    """Whether a failed connect is worth another try before ``deadline`` (monotonic).

    Only a refusal is: nobody listens yet (ECONNREFUSED), or a Unix socket's
    file is not there yet (ENOENT). Anything else fails at once.
    """
    refused = exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
    return refused and time.monotonic() + CONNECT_RETRY_INTERVAL <= deadline


async def aconnect_socket(
    endpoint: Endpoint, family: int, *, admit: Callable[[ConnectAttempt], bool] | None = None
) -> socket.socket:
    """``connect_socket`` on the running event loop: the same attempts, in order.

    A host name is resolved in the loop's executor, as ``loop.getaddrinfo``
    does, but through ``address.resolve`` so that an unknown host is worded
    as in the blocking layer; an address literal needs no thread.

    Args:
        admit: says which resolved addresses may be tried (a proxy's
            destination policy); None tries them all.

    Raises:
        ConnectError: every attempt failed, or ``admit`` let none be tried.
        AddressError: the host does not resolve.
    """
    loop = asyncio.get_running_loop()
    connecting = Connecting(endpoint, family=family)
    if connecting.resolving:
        attempts = await loop.run_in_executor(None, connecting.attempts)
    else:
        attempts = connecting.attempts()
    tried = False
    for attempt in attempts:
        if admit is not None and not admit(attempt):
            continue
        tried = True
        with connecting.trying(attempt) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, attempt.sockaddr)
            return connecting.connected(attempt, sock)
    if not tried:
        raise ConnectError(f"cannot connect to {endpoint}: no address of it is allowed")
    raise connecting.failure()


def connect_failure(
    exc: OSError, endpoint: Endpoint, address: str | None, timeout: float | None
) -> SocketkitError:
    """Why connecting ``endpoint`` at one of its ``address``es failed, for people.

    The address is named only when the endpoint is a name (it may have
    several: ``localhost`` is ::1 and 127.0.0.1); shared by the blocking and
    asyncio layers so both word it the same.
    """
    where = str(endpoint)
    host = endpoint.host if isinstance(endpoint, InetEndpoint) else None
    if address is not None and host and not _is_numeric(host):
        where = f"{endpoint} ({address})"
    if isinstance(exc, TimeoutError):
        return timeout_error("connect", where, timeout)
    return translate_os_error(exc, phase="connect", where=where)


def _is_numeric(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.split("%")[0])
    except OSError:
        return False
    return True


def bound_port(sock: socket.socket) -> int | None:
    """The port a socket is bound to (after binding port 0: the one chosen); None for Unix."""
    name = sock.getsockname()
    return int(name[1]) if isinstance(name, tuple) else None


def local_name(sock: socket.socket) -> str:
    """The socket's own address, formatted (``127.0.0.1:8080``, ``unix:/p``)."""
    try:
        return format_sockaddr(sock.getsockname())
    except OSError:
        return "?"


def peer_name(sock: socket.socket) -> str:
    """The peer's address, formatted; ``?`` once the peer is gone."""
    try:
        return format_sockaddr(sock.getpeername())
    except OSError:
        return "?"
