"""A ``socket.socket`` whose calls report themselves: the truth of ``--trace``.

Strategy: the seam in ``socketkit._sockets`` makes every socket of the
library; while tracing is on it makes ``TracedSocket`` instead. Each method
calls the real one (one system call, the same as the untraced socket would
make) and then emits an event with the outcome, so the printed sequence is
the kernel's sequence. Sockets accepted from a traced listener are traced too.

What cannot be seen from here (and so is not claimed):
- uvloop's I/O, done in C on the descriptor: ``--trace`` runs the default
  asyncio loop, whose transports call ``recv``/``send`` on this object.
- ``getsockname``/``getpeername``/``getsockopt`` (asyncio and the connect
  timeout ask for them); they change nothing and are not printed.

Invariant: ``sendall`` is a loop of traced ``send`` calls, so every
``sendto`` strace sees has its own line.
"""

from __future__ import annotations

import _socket
import errno
import functools
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from ..address import format_sockaddr
from ._events import TraceEvent, preview

__all__ = ["TracedSocket", "set_sink"]

Sink = Callable[[TraceEvent], None]
_sink: Sink | None = None


def set_sink(sink: Sink | None) -> Sink | None:
    """Send events of every traced socket to ``sink``; return the previous one."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def _emit(call: str, fd: int, args: str, result: str = "0", error: str | None = None) -> None:
    """Hand the sink the event of one call, stamped with the calling thread."""
    sink = _sink
    if sink is not None:
        sink(TraceEvent(call, fd, args, result, error, threading.get_native_id()))


def _emit_error(exc: OSError, call: str, fd: int, args: str) -> None:
    """Report a failed call, unless no system call was made.

    On a socket with a timeout Python polls first; when the poll times out
    it raises TimeoutError (errno None) without calling the function at all,
    so there is nothing to report: strace sees only the poll.
    """
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return
    _emit(call, fd, args, error=_err(exc))


def _err(exc: OSError) -> str:
    if exc.errno is None:
        if isinstance(exc, TimeoutError):
            return "ETIMEDOUT (timed out)"
        return type(exc).__name__
    return _errno_text(exc.errno, exc.strerror)


def _errno_text(code: int, strerror: str | None) -> str:
    """``ECONNREFUSED (Connection refused)``."""
    return f"{errno.errorcode.get(code, str(code))} ({strerror})"


#: Names printed for the options and constants socketkit uses; others print as numbers.
_NAMES: dict[str, tuple[str, ...]] = {
    "AF_": ("AF_INET", "AF_INET6", "AF_UNIX"),
    "SOCK_": ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW", "SOCK_SEQPACKET"),
    "SO_": (
        "SO_REUSEADDR",
        "SO_REUSEPORT",
        "SO_EXCLUSIVEADDRUSE",
        "SO_KEEPALIVE",
        "SO_SNDBUF",
        "SO_RCVBUF",
        "SO_LINGER",
        "SO_BROADCAST",
        "SO_ERROR",
    ),
    "TCP_": ("TCP_NODELAY", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_QUICKACK"),
    "IP_": ("IP_TOS", "IP_TTL", "IP_MTU_DISCOVER"),
    "IPV6_": ("IPV6_V6ONLY",),
}


@functools.lru_cache(maxsize=256)
def _enum_name(value: int, prefix: str) -> str:
    for name in _NAMES.get(prefix, ()):
        if getattr(socket, name, None) == value:
            return name
    return str(value)


_LEVELS = {
    socket.SOL_SOCKET: ("SOL_SOCKET", "SO_"),
    socket.IPPROTO_TCP: ("IPPROTO_TCP", "TCP_"),
    socket.IPPROTO_IP: ("IPPROTO_IP", "IP_"),
}
if hasattr(socket, "IPPROTO_IPV6"):
    _LEVELS[socket.IPPROTO_IPV6] = ("IPPROTO_IPV6", "IPV6_")
_SHUT = {socket.SHUT_RD: "SHUT_RD", socket.SHUT_WR: "SHUT_WR", socket.SHUT_RDWR: "SHUT_RDWR"}


def _addr(address: Any) -> str:
    try:
        return format_sockaddr(address)
    except Exception:  # an address Python accepted but we cannot format
        return repr(address)


def _bind_args(address: Any) -> str:
    """The address, and for IP the port in host and network byte order."""
    text = _addr(address)
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
        port = address[1]
        net = port.to_bytes(2, "big")
        if port == 0:
            return text + "; port 0: the kernel picks a free port"
        text += (
            f"; port {port} = 0x{port:04x} in host order,"
            f" bytes {net[0]:02x} {net[1]:02x} on the wire (htons)"
        )
    return text


class TracedSocket(socket.socket):
    """A socket that prints each call it makes (see the module docstring)."""

    __slots__ = ()

    def __init__(
        self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None
    ) -> None:
        try:
            super().__init__(family, type, proto, fileno)
        except OSError as exc:
            if fileno is None:
                _emit_error(exc, "socket", -1, f"{family}, {type}, {proto}")
            raise
        if fileno is None:
            args = (
                f"{_enum_name(self.family, 'AF_')}, {_enum_name(self.type, 'SOCK_')}, {self.proto}"
            )
            _emit("socket", self.fileno(), args, str(self.fileno()))

    # -- setting up -----------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:
        level_name, prefix = _LEVELS.get(level, (str(level), ""))
        opt = _enum_name(optname, prefix) if prefix else str(optname)
        args = f"{level_name}, {opt}, {value!r}"
        try:
            if optlen is None:
                super().setsockopt(level, optname, value)
            else:
                super().setsockopt(level, optname, value, optlen)
        except OSError as exc:
            _emit_error(exc, "setsockopt", self.fileno(), args)
            raise
        _emit("setsockopt", self.fileno(), args)

    def bind(self, address: Any) -> None:
        args = _bind_args(address)
        try:
            super().bind(address)
        except OSError as exc:
            _emit_error(exc, "bind", self.fileno(), args)
            raise
        _emit("bind", self.fileno(), args)

    def listen(self, backlog: int = -1, /) -> None:
        if backlog < 0:
            super().listen()
            backlog_text = "default"
        else:
            super().listen(backlog)
            backlog_text = str(backlog)
        _emit("listen", self.fileno(), f"backlog {backlog_text}")

    def accept(self) -> tuple[socket.socket, Any]:
        fd = self.fileno()
        try:
            newfd, addr = self._accept()  # type: ignore[attr-defined]
        except OSError as exc:
            _emit_error(exc, "accept", fd, "")
            raise
        sock = TracedSocket(self.family, self.type, self.proto, fileno=newfd)
        # As socket.accept does: a listener with a timeout hands out blocking sockets.
        if socket.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        _emit("accept", fd, f"new fd {newfd} from {_addr(addr)}", str(newfd))
        return sock, addr

    def connect(self, address: Any) -> None:
        args = _addr(address)
        timeout = self.gettimeout()
        if timeout is not None and self.type == socket.SOCK_STREAM:
            # Python makes a socket with a timeout non-blocking: connect(2)
            # answers EINPROGRESS and Python polls until it completes.
            args += f"; non-blocking, {timeout:g} s timeout: EINPROGRESS, poll, SO_ERROR"
        try:
            super().connect(address)
        except OSError as exc:
            if isinstance(exc, TimeoutError) and exc.errno is None:
                # connect(2) was made (EINPROGRESS); the wait after it ran out.
                no_answer = f"EINPROGRESS (then no answer within {timeout:g} s)"
                _emit("connect", self.fileno(), args, error=no_answer)
            else:
                _emit_error(exc, "connect", self.fileno(), args)
            raise
        _emit("connect", self.fileno(), args)

    def connect_ex(self, address: Any) -> int:
        code = super().connect_ex(address)
        err = _errno_text(code, os.strerror(code)) if code else None
        _emit("connect", self.fileno(), _addr(address), error=err)
        return code

    # -- data -------------------------------------------------------------
    def send(self, data: Any, flags: int = 0, /) -> int:
        view = memoryview(data).cast("B")
        try:
            n = super().send(view, flags)
        except OSError as exc:
            _emit_error(exc, "send", self.fileno(), f"{len(view)} bytes")
            raise
        _emit("send", self.fileno(), f"{len(view)} bytes {preview(view[:n])}", str(n))
        return n

    def sendall(self, data: Any, flags: int = 0, /) -> None:
        view = memoryview(data).cast("B")
        sent = self.send(view, flags)  # once even when empty, as socket.sendall does
        while sent < len(view):
            sent += self.send(view[sent:], flags)

    def sendto(self, data: Any, flags_or_address: Any, address: Any = None, /) -> int:
        view = memoryview(data).cast("B")
        if address is None:
            flags, address = 0, flags_or_address
        else:
            flags = flags_or_address
        args = f"{len(view)} bytes to {_addr(address)}"
        try:
            n = super().sendto(view, flags, address)
        except OSError as exc:
            _emit_error(exc, "sendto", self.fileno(), args)
            raise
        _emit("sendto", self.fileno(), f"{args} {preview(view[:n])}", str(n))
        return n

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        try:
            data = super().recv(bufsize, flags)
        except OSError as exc:
            _emit_error(exc, "recv", self.fileno(), f"up to {bufsize}")
            raise
        shown = preview(data) if data else "(end of stream)"
        _emit("recv", self.fileno(), f"up to {bufsize}: {shown}", str(len(data)))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        asked = nbytes or memoryview(buffer).nbytes
        try:
            n = super().recv_into(buffer, nbytes, flags)
        except OSError as exc:
            _emit_error(exc, "recv", self.fileno(), f"up to {asked}")
            raise
        shown = preview(memoryview(buffer).cast("B")[:n]) if n else "(end of stream)"
        _emit("recv", self.fileno(), f"up to {asked}: {shown}", str(n))
        return n

    def recvfrom(self, bufsize: int, flags: int = 0, /) -> tuple[bytes, Any]:
        try:
            data, addr = super().recvfrom(bufsize, flags)
        except OSError as exc:
            _emit_error(exc, "recvfrom", self.fileno(), f"up to {bufsize}")
            raise
        args = f"up to {bufsize} from {_addr(addr)}: {preview(data)}"
        _emit("recvfrom", self.fileno(), args, str(len(data)))
        return data, addr

    # -- tearing down -----------------------------------------------------
    def shutdown(self, how: int, /) -> None:
        args = _SHUT.get(how, str(how))
        try:
            super().shutdown(how)
        except OSError as exc:
            _emit_error(exc, "shutdown", self.fileno(), args)
            raise
        _emit("shutdown", self.fileno(), args)

    def _real_close(self, _ss: Any = _socket.socket) -> None:
        # socket.close() calls this once no makefile() object holds the
        # descriptor: it is the one close(2).
        fd = self.fileno()
        _ss.close(self)
        if fd >= 0:
            _emit("close", fd, "")
