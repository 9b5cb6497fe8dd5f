"""Channels: the two ends a pump moves bytes between.

A channel is a byte source and a byte sink with a way to say "no more from
me" (``shutdown_write``, the half-close) and a way to wake whatever thread
is blocked on it (``abort``). The pump needs nothing else, so one pump
serves connect, listen, relay and exec.

Invariants:
- ``read_into`` returns 0 only at end of stream; datagram channels never do
  (UDP has no end of stream), and skip empty datagrams.
- ``write_all`` writes every byte or raises; a datagram channel writes one
  datagram per call (so the pump never hands it more than ``max_write``).
- ``splice_fd`` is set only where splice(2) may be used: a plain stream
  socket (or pipe) on Linux. TLS and datagrams never splice.
- ``stays_open``: reading may block forever with no end of stream and
  nobody minds (standard input on a terminal). A pump does not wait for such a source
  once every other direction has ended, as netcat exits when the peer closes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import subprocess
import sys
import threading

from .._sockets import MAX_UDP_PAYLOAD as MAX_DATAGRAM
from ..tls import MemoryTLS

__all__ = [
    "Channel",
    "DatagramChannel",
    "PipeChannel",
    "SocketChannel",
    "StdioChannel",
    "TLSChannel",
]


_SPLICE = hasattr(os, "splice") and sys.platform.startswith("linux")


class Channel:
    """Base class: one end of a pump. Subclasses override the I/O methods."""

    name: str = "?"
    splice_fd: int | None = None
    max_write: int = 1 << 30
    stays_open: bool = False

    def read_into(self, buf: memoryview) -> int:
        raise NotImplementedError

    def write_all(self, data: memoryview | bytes) -> None:
        raise NotImplementedError

    def shutdown_write(self) -> None:
        """Tell the peer nothing more will come (half-close); reading goes on."""

    def abort(self) -> None:
        """Wake any thread blocked on this channel; it then sees end of stream or an error."""

    def close(self) -> None:
        """Release the channel; safe to call twice."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class SocketChannel(Channel):
    """A connected stream socket (TCP or Unix)."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self._closed = False
        # Only a plain socket splices: a subclass (SSLSocket, or --trace's
        # TracedSocket, whose calls must be seen) goes through its methods.
        if _SPLICE and sock.type == socket.SOCK_STREAM and type(sock) is socket.socket:
            self.splice_fd = sock.fileno()

    def read_into(self, buf: memoryview) -> int:
        return self.sock.recv_into(buf)

    def write_all(self, data: memoryview | bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


class DatagramChannel(Channel):
    """A connected datagram socket (UDP): one read is one datagram, no end of stream.

    ``pending`` is a datagram already received (by a listener that waited
    for its first peer); it is returned by the first read.
    """

    max_write = MAX_DATAGRAM

    def __init__(self, sock: socket.socket, name: str, pending: bytes = b"") -> None:
        self.sock = sock
        self.name = name
        self._pending = pending
        self._aborted = False
        self._closed = False

    def read_into(self, buf: memoryview) -> int:
        if self._pending:
            n = min(len(buf), len(self._pending))
            buf[:n] = self._pending[:n]
            self._pending = b""
            return n
        while True:
            if self._aborted:
                return 0
            n = self.sock.recv_into(buf)
            if n or self._aborted:
                return n

    def write_all(self, data: memoryview | bytes) -> None:
        self.sock.send(data)

    def abort(self) -> None:
        self._aborted = True
        # shutdown() wakes a blocked recv on Linux; elsewhere a zero-length
        # datagram to ourselves would be needed, and the reader thread is a daemon.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


class StdioChannel(Channel):
    """This process's standard input and output, as raw file descriptors (binary-safe)."""

    name = "stdio"

    def __init__(self, read_fd: int = 0, write_fd: int = 1) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        # A terminal only ends when someone types Ctrl-D: once the peer has
        # closed, don't wait for that. A pipe or file does end, and what it
        # still holds must reach a peer that only half-closed.
        try:
            self.stays_open = os.isatty(read_fd)
        except OSError:
            self.stays_open = False

    def read_into(self, buf: memoryview) -> int:
        return os.readv(self.read_fd, [buf])

    def write_all(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.write_fd, view)
            view = view[n:]


class PipeChannel(Channel):
    """A child process's standard output (read) and standard input (write).

    The portable way to run a program on a connection (and the only one on
    Windows, where a socket cannot be a child's standard input).
    """

    def __init__(self, proc: subprocess.Popen[bytes], name: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.name = name
        self._in = proc.stdin
        self._out = proc.stdout

    def read_into(self, buf: memoryview) -> int:
        return self._out.readinto(buf)  # type: ignore[attr-defined,no-any-return]

    def write_all(self, data: memoryview | bytes) -> None:
        self._in.write(data)
        self._in.flush()

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def close(self) -> None:
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()


class TLSChannel(Channel):
    """A TLS connection that two pump threads may use at once.

    The TLS state machine (``ssl.SSLObject`` on memory BIOs) is only touched
    under ``_lock``; the socket is read outside it (by the reading thread
    alone) and written under ``_send_lock``, which is taken *before*
    ``_lock`` is released so that records leave in the order they were
    made. No thread ever blocks on the socket while holding ``_lock``.

    Half-close (``shutdown_write``): the records already received are
    decrypted into a side buffer first, then close_notify is sent and the
    TCP write side shut down; reading continues until the peer's own
    close_notify or FIN (RFC 8446 section 6.1: each side closes its write
    direction independently). A FIN without close_notify is read as end of
    stream, as Python's ``suppress_ragged_eofs`` does.
    """

    def __init__(self, tls: MemoryTLS, name: str) -> None:
        self.sock = tls.sock
        self.obj = tls.obj
        self._in = tls.incoming
        self._out = tls.outgoing
        self.name = name
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._plain = bytearray()
        self._aborted = False
        self._closed = False
        self._sent_close = False

    def _flush_locked(self) -> bytes:
        """Take the records made so far (call under ``_lock``)."""
        return self._out.read() if self._out.pending else b""

    def _send(self, data: bytes) -> None:
        """Send records; ``_send_lock`` is already held, and released here."""
        try:
            if data:
                self.sock.sendall(data)
        finally:
            self._send_lock.release()

    def read_into(self, buf: memoryview) -> int:
        while True:
            if self._aborted:
                return 0
            with self._lock:
                if self._plain:
                    n = min(len(buf), len(self._plain))
                    buf[:n] = self._plain[:n]
                    del self._plain[:n]
                    return n
                try:
                    # With a buffer, read() fills it and returns a count.
                    got: object = self.obj.read(len(buf), buf)
                    return got if isinstance(got, int) else 0
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return 0
                out = self._flush_locked()
                if out:
                    self._send_lock.acquire()
            if out:
                self._send(out)
            data = self.sock.recv(1 << 16)
            with self._lock:
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()

    def write_all(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            if self._aborted:
                raise BrokenPipeError(errno.EPIPE, "connection aborted")
            chunk = view[: 1 << 16]
            with self._lock:
                self.obj.write(chunk)
                out = self._flush_locked()
                self._send_lock.acquire()
            self._send(out)
            view = view[len(chunk) :]

    def shutdown_write(self) -> None:
        with self._lock:
            if self._sent_close:
                return
            self._sent_close = True
            # Decrypt every record already here, so that the second
            # SSL_shutdown call inside unwrap() finds none to discard.
            while True:
                try:
                    chunk = self.obj.read(1 << 16)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
                if not chunk:
                    break
                self._plain += chunk
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.obj.unwrap()
            out = self._flush_locked()
            self._send_lock.acquire()
        with contextlib.suppress(OSError):
            self._send(out)
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def abort(self) -> None:
        self._aborted = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._sent_close and not self._aborted:
            with contextlib.suppress(OSError):
                self.sock.settimeout(1.0)
                self.shutdown_write()  # best effort: close_notify before the FIN
        self.sock.close()
