"""The two-way pump: one function moves bytes between two channels, both ways.

Used by ``connect``, ``listen``, ``relay`` and exec's portable path; there
is no other copy loop.

Strategy: one thread per direction, blocking I/O. Each direction holds at
most one buffer (or, on the splice path, one pipe) of data in flight: it
reads from its source only after the previous chunk was written to its
destination, so a slow reader on one side stalls the reads on the other
side, and memory stays bounded whatever the speeds (TCP flow control then
pushes back on the sender).

The default path, everywhere: ``recv_into`` a preallocated 256 KiB buffer,
then send it all. Optional path (Linux, ``relay --splice``): for a direction
between two plain stream sockets, splice(2) moves the data socket -> pipe ->
socket inside the kernel, never copying it into Python (the pipe is enlarged
to ``PIPE_SIZE`` with F_SETPIPE_SZ where allowed). It is not the default
because it measured slower: 1 GiB each way through ``relay tcp-listen,fork
tcp`` to a C echo on this project's 2-CPU Linux 6.18 VMs gave splice
844-918 MiB/s against 1165-1234 MiB/s for the buffers (``python -m
benchmarks.relay``); a relay between loopback sockets pays two splice calls
per chunk and gains no copy, since the receiving socket copies anyway.

End of stream: when a direction reads EOF, it half-closes its destination
(``shutdown_write``) and the other direction keeps going until it ends
too; the pump returns once both have. A source that ``stays_open`` (a
terminal) is not waited for once every other direction ended, so an
interactive ``connect`` exits when the peer closes, as netcat does; piped
input is sent in full. UDP has no end of stream: after end of input, a UDP
pump runs until ``idle_timeout`` or ``eof_linger`` (nc -u behaves the same).

Errors: the first error ends the pump; both channels are aborted, which
wakes the other thread, and later errors (caused by the abort) are ignored.
The pump never closes the channels; its caller does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import BrokenError, SocketkitError, translate_os_error
from ._channels import Channel

__all__ = ["OutputClosedError", "PumpOptions", "PumpResult", "pump"]

#: Bytes per read on the portable path: large enough that a system call moves
#: a lot, small enough to stay in cache. One per direction.
BUFFER_SIZE = 256 * 1024
#: Pipe capacity asked for on the splice path (if refused, the default 64 KiB
#: pipe is used). Measured on a loaded 2-CPU machine, 1 GiB through
#: tcp-listen -> tcp to a C echo: 64 KiB 482, 128 KiB 496-523, 256 KiB 474,
#: 1 MiB 461-481 MiB/s; noisy, but larger was never better.
PIPE_SIZE = 128 * 1024
#: fcntl(2) command to resize a pipe (Linux; the fcntl module lacks the name before 3.10).
_F_SETPIPE_SZ = 1031

#: Directions as the hex dump shows them: a -> b is "sent", b -> a "received".
SENT = ">"
RECEIVED = "<"


@dataclass(slots=True)
class PumpOptions:
    """How a pump runs.

    Attributes:
        a_to_b, b_to_a: which directions run (``--send-only``/``--recv-only``).
        idle_timeout: end the pump after this many seconds with no data either
            way (None: never).
        eof_linger: once the a -> b direction (standard input) has ended,
            wait at most this long for the other direction (None: as long as
            it takes; 0: close at once).
        transform: rewrite a -> b data (``--crlf``); disables splice that way.
        observer: called with (direction, bytes) for each chunk (hex dump);
            disables splice.
        splice: allow the splice(2) path (``relay --splice``).
    """

    a_to_b: bool = True
    b_to_a: bool = True
    idle_timeout: float | None = None
    eof_linger: float | None = None
    transform: Callable[[bytes], bytes] | None = None
    observer: Callable[[str, bytes], None] | None = None
    splice: bool = False


@dataclass(slots=True)
class PumpResult:
    """What happened: byte counts each way, and why it ended."""

    sent: int = 0  # a -> b
    received: int = 0  # b -> a
    error: SocketkitError | None = None
    reason: str = "closed"  # closed | idle timeout | linger expired | aborted
    spliced: list[str] = field(default_factory=list)


class OutputClosedError(BrokenError):
    """Standard output went away (``socketkit connect ... | head``): end quietly."""


class _Direction:
    def __init__(self, src: Channel, dst: Channel, tag: str) -> None:
        self.src = src
        self.dst = dst
        self.tag = tag
        self.count = 0
        self.done = False
        self.error: SocketkitError | None = None
        self.spliced = False


class _Pump:
    def __init__(self, a: Channel, b: Channel, options: PumpOptions) -> None:
        self.a = a
        self.b = b
        self.options = options
        self.cond = threading.Condition()
        self.last_active = time.monotonic()
        self.aborted = False
        self.directions: list[_Direction] = []
        if options.a_to_b:
            self.directions.append(_Direction(a, b, SENT))
        if options.b_to_a:
            self.directions.append(_Direction(b, a, RECEIVED))

    # ----------------------------------------------------------- per direction

    def run_direction(self, d: _Direction) -> None:
        try:
            can_splice = (
                self.options.splice
                and d.src.splice_fd is not None
                and d.dst.splice_fd is not None
                and self.options.observer is None
                and (d.tag == RECEIVED or self.options.transform is None)
            )
            if can_splice:
                d.spliced = True
                self._splice(d)
            else:
                self._copy(d)
            d.dst.shutdown_write()
        except OSError as exc:
            if not self.aborted and not self._peer_gone(exc, d):
                d.error = self._translate(exc, d)
        except SocketkitError as exc:
            if not self.aborted:
                d.error = exc
        finally:
            with self.cond:
                d.done = True
                self.cond.notify_all()

    def _peer_gone(self, exc: OSError, d: _Direction) -> bool:
        """A write refused after the peer's own end of stream: it closed, not an error.

        (The peer sent EOF and then closed completely, so what we still had
        to send has nowhere to go; netcat ends quietly there too.)
        """
        if getattr(exc, "_socketkit_where", None) != "dst":
            return False
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET) or d.dst.name == "stdio":
            return False
        return any(o.done and o.error is None for o in self.directions if o.src is d.dst)

    def _translate(self, exc: OSError, d: _Direction) -> SocketkitError:
        where = getattr(exc, "_socketkit_where", None)
        phase = "send" if where == "dst" else "receive"
        peer = d.dst.name if where == "dst" else d.src.name
        if exc.errno == errno.EPIPE and peer == "stdio":
            # Standard output went away (``| head``): a quiet end, not an error.
            return OutputClosedError("standard output closed", errno=exc.errno)
        return translate_os_error(exc, phase=phase, where=peer)

    def _touch(self, n: int, d: _Direction) -> None:
        d.count += n
        self.last_active = time.monotonic()

    def _copy(self, d: _Direction) -> None:
        buf = bytearray(BUFFER_SIZE if d.dst.max_write >= BUFFER_SIZE else d.dst.max_write)
        view = memoryview(buf)
        transform = self.options.transform if d.tag == SENT else None
        observer = self.options.observer
        while True:
            try:
                n = d.src.read_into(view)
            except OSError as exc:
                exc._socketkit_where = "src"  # type: ignore[attr-defined]
                raise
            if n == 0:
                return
            data: memoryview | bytes = view[:n]
            if transform is not None:
                data = transform(bytes(data))
            if observer is not None:
                observer(d.tag, bytes(data))
            try:
                d.dst.write_all(data)
            except OSError as exc:
                exc._socketkit_where = "dst"  # type: ignore[attr-defined]
                raise
            self._touch(n, d)

    def _splice(self, d: _Direction) -> None:
        src_fd, dst_fd = d.src.splice_fd, d.dst.splice_fd
        assert src_fd is not None
        assert dst_fd is not None
        rd, wr = os.pipe()
        try:
            size = PIPE_SIZE
            try:
                import fcntl  # POSIX only, like the splice path itself

                size = fcntl.fcntl(wr, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_SIZE)
            except OSError:
                size = 64 * 1024
            while True:
                try:
                    n = os.splice(src_fd, wr, size, flags=os.SPLICE_F_MOVE)
                except OSError as exc:
                    exc._socketkit_where = "src"  # type: ignore[attr-defined]
                    raise
                if n == 0:
                    return
                left = n
                while left:
                    try:
                        left -= os.splice(rd, dst_fd, left, flags=os.SPLICE_F_MOVE)
                    except OSError as exc:
                        exc._socketkit_where = "dst"  # type: ignore[attr-defined]
                        raise
                self._touch(n, d)
        finally:
            os.close(rd)
            os.close(wr)

    # ------------------------------------------------------------------ control

    def abort(self) -> None:
        self.aborted = True
        for ch in (self.a, self.b):
            with contextlib.suppress(OSError):
                ch.abort()

    def _finished(self, linger_start: list[float]) -> bool:
        live = [d for d in self.directions if not d.done]
        if any(d.error for d in self.directions):
            return True
        if not live:
            return True
        if all(d.src.stays_open for d in live) and not all(
            d.src.stays_open for d in self.directions
        ):
            # What is left reads from a terminal: the connection
            # itself has ended, as far as anyone can tell.
            return True
        input_ended = any(d.done and d.tag == SENT for d in self.directions)
        if input_ended and self.options.eof_linger is not None and not linger_start:
            linger_start.append(time.monotonic())
        return False

    def run(self) -> PumpResult:
        result = PumpResult()
        threads = []
        for d in self.directions:
            t = threading.Thread(
                target=self.run_direction, args=(d,), daemon=True, name=f"pump {d.tag}"
            )
            t.start()
            threads.append(t)
        linger_start: list[float] = []
        try:
            with self.cond:
                while not self._finished(linger_start):
                    timeout: float | None = None
                    now = time.monotonic()
                    if self.options.idle_timeout is not None:
                        left = self.last_active + self.options.idle_timeout - now
                        if left <= 0:
                            result.reason = "idle timeout"
                            break
                        timeout = left
                    if linger_start:
                        assert self.options.eof_linger is not None
                        left = linger_start[0] + self.options.eof_linger - now
                        if left <= 0:
                            result.reason = "closed after end of input"
                            break
                        timeout = left if timeout is None else min(timeout, left)
                    self.cond.wait(timeout)
        finally:
            if not all(d.done for d in self.directions) or any(d.error for d in self.directions):
                self.abort()
        # Directions blocked on a socket return promptly once aborted; one
        # blocked on standard input is a daemon thread and is left behind.
        for d, t in zip(self.directions, threads, strict=True):
            if not d.src.stays_open:
                t.join(5.0)
        for d in self.directions:
            if d.tag == SENT:
                result.sent = d.count
            else:
                result.received = d.count
            if d.spliced:
                result.spliced.append(d.tag)
        errors = [d.error for d in self.directions if d.error is not None]
        if errors:
            result.error = errors[0]
            result.reason = "error"
        return result


def pump(a: Channel, b: Channel, options: PumpOptions | None = None) -> PumpResult:
    """Move bytes a -> b and b -> a until both directions end (see the module docstring).

    Args:
        a: the local side (standard I/O, or the accepted connection of a relay).
        b: the remote side.
        options: directions, timeouts, transforms; defaults: both ways, no timeouts.

    Returns:
        Byte counts and how it ended; ``error`` holds the first failure, if any
        (the data in flight in that direction, at most one buffer, is lost).
        The channels are left open for the caller to close.
    """
    return _Pump(a, b, options or PumpOptions()).run()
