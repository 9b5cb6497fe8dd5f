"""The server engine: one accept loop and one datagram loop under every server.

Strategy:
- TCP and Unix stream: we accept ourselves (a reader callback on each
  listening socket, up to ``ACCEPT_BATCH`` accepts per wake-up) and hand each
  socket to the loop with ``connect_accepted_socket``. Owning the accept loop
  is what lets the engine stop accepting at ``max_conns`` and resume below it,
  and back off when the process runs out of descriptors instead of spinning
  (EMFILE leaves the pending connection in the backlog, so the listening
  socket stays readable: retrying at once would busy-loop, as Trio's
  ``_highlevel_serve_listeners.py`` explains).
- UDP and Unix datagram: a reader callback drains the socket with plain
  non-blocking ``recvfrom``/``sendto`` calls, many datagrams per wake-up.
  This avoids asyncio's per-datagram protocol machinery, which on the
  default loop costs several times more than the system calls themselves.
- Idle connections are found by one periodic sweep that counts, per
  connection, the sweeps since it last made progress: no timer per
  connection and no clock read per message.
- Shutdown: stop accepting, ask every connection to finish its exchange,
  wait up to ``drain_timeout``, then abort what is left.

One client never brings the server down: every per-connection failure ends
in ``ConnectionProtocol.abort`` with a logged reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._mmsg import DatagramBatch
from .._sockets import MAX_UDP_PAYLOAD, bound_port
from ..address import format_sockaddr
from ..errors import MessageTooLargeError
from ..framing import Codec
from ..tls import HANDSHAKE_TIMEOUT
from ._log import ServerLog, Stats
from ._services import ConnectionProtocol, Service

__all__ = ["ConnectionHost", "DatagramEngine", "Limits", "StreamEngine", "install_signal_handlers"]

#: Accepts per wake-up: enough to drain a burst, small enough to stay fair.
ACCEPT_BATCH = 64
#: Datagrams handled per wake-up before giving other work a turn.
DATAGRAM_BATCH = 1024
#: Datagrams per recvmmsg/sendmmsg call (Linux). 64 slots of 64 KiB is 4 MiB
#: of receive buffer; with small datagrams more slots gained nothing
#: measurable over 64 (the kernel's per-datagram cost dominates).
BATCH_SLOTS = 64
_BATCH_FAMILIES = {socket.AF_INET, socket.AF_INET6, getattr(socket, "AF_UNIX", -1)}
#: Seconds to wait before accepting again after running out of descriptors.
ACCEPT_BACKOFF = 0.1
ACCEPT_BACKOFF_MAX = 1.0
#: errnos meaning "out of resources": back off, don't spin (accept(2)).
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: errnos meaning "that one client went away before we accepted it".
_CLIENT_GONE_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET, errno.EPERM}


@dataclass(slots=True)
class Limits:
    """Limits on a stream server.

    Attributes:
        max_conns: connections served at once; beyond it the engine stops
            accepting (clients wait in the listen backlog). None: no limit.
        idle_timeout: seconds without received data or write progress after
            which a connection is closed. None: never.
        drain_timeout: seconds that in-flight exchanges get at shutdown.
        max_clients: stop accepting after this many clients in all and exit
            when they are done (``--once`` is 1). None: serve for ever.
        turn_away: a client over ``max_conns`` is accepted and closed at once
            (ncat's ``--max-conns``) instead of waiting in the backlog.
    """

    max_conns: int | None = None
    idle_timeout: float | None = None
    drain_timeout: float = 5.0
    max_clients: int | None = None
    turn_away: bool = False


class ConnectionHost:
    """What a connection's protocol sees of the engine that runs it."""

    def __init__(
        self,
        log: ServerLog,
        stats: Stats,
        *,
        accept_filter: Callable[[object], str | None] | None = None,
        proxy_protocol: bool = False,
    ) -> None:
        self.log = log
        self.stats = stats
        self.connections: set[ConnectionProtocol] = set()
        #: Decides who may connect: returns None to admit an address, or why not.
        self.accept_filter = accept_filter
        #: Connections start with a PROXY protocol header naming the real client.
        self.proxy_protocol = proxy_protocol
        self._loop: asyncio.AbstractEventLoop | None = None

    def refusal(self, address: object) -> str | None:
        """Why ``address`` may not connect, or None when it may."""
        return None if self.accept_filter is None else self.accept_filter(address)

    def opened(self, conn: ConnectionProtocol) -> None:
        self.connections.add(conn)
        stats = self.stats
        stats.active += 1
        if stats.active > stats.peak_active:
            stats.peak_active = stats.active

    def closed(self, conn: ConnectionProtocol, reason: str | None) -> None:
        self.connections.discard(conn)
        stats = self.stats
        stats.active -= 1
        stats.bytes_in += conn.bytes_in
        stats.bytes_out += conn.bytes_out
        self.log.closed(conn.peer, reason, conn.bytes_in, conn.bytes_out)


class StreamEngine(ConnectionHost):
    """Serves a stream service on one or more listening sockets.

    Args:
        listeners: bound, listening sockets (any number, any family).
        service: what each connection gets (``socketkit.server.Echo()``...).
        codec: the framing the service reads and writes (None: its default).
        limits: connection limits and timeouts.
        log: where connections are logged.
        accept_filter: returns why an address may not connect, or None
            (``socketkit.access.AccessList`` is one).
        proxy_protocol: connections start with a PROXY protocol header.
        ssl_context: serve TLS with this context.
    """

    def __init__(
        self,
        listeners: list[socket.socket],
        service: Service,
        *,
        codec: Codec | None = None,
        limits: Limits | None = None,
        log: ServerLog | None = None,
        accept_filter: Callable[[object], str | None] | None = None,
        proxy_protocol: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            log or ServerLog(), Stats(), accept_filter=accept_filter, proxy_protocol=proxy_protocol
        )
        self.listeners = listeners
        self.service = service
        self._protocol_factory = service.protocol_factory(codec)
        self.limits = limits or Limits()
        #: TLS for every accepted connection (None: plain TCP).
        self.ssl_context = ssl_context
        self._accepting = False
        self._stopping = False
        self._accepted_total = 0
        # Accepted sockets whose protocol is not yet up (``connection_made``
        # runs a loop turn later): they count against ``max_conns`` too, or a
        # burst accepted in one batch would overshoot the limit.
        self._pending = 0
        self._backoff = ACCEPT_BACKOFF
        self._stopped: asyncio.Future[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        # Set when the last connection closes during shutdown.
        self._drained = asyncio.Event()

    # lifecycle -------------------------------------------------------------

    async def serve(self) -> Stats:
        """Serve until ``stop()`` (or the client limit); return the counters."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopped = loop.create_future()
        for sock in self.listeners:
            sock.setblocking(False)
        self._start_accepting()
        if self.limits.idle_timeout is not None:
            self._idle_task = loop.create_task(self._sweep_idle(self.limits.idle_timeout))
        try:
            await self._stopped
        finally:
            await self._shutdown()
        return self.stats

    @property
    def port(self) -> int | None:
        """The port of the first listening socket (None for Unix sockets)."""
        return bound_port(self.listeners[0])

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from a signal handler)."""
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def _shutdown(self) -> None:
        self._stopping = True
        self._stop_accepting()
        for sock in self.listeners:
            sock.close()
        if self._idle_task is not None:
            self._idle_task.cancel()
        for conn in list(self.connections):
            conn.shutdown_requested()
        if self.connections:
            try:
                async with asyncio.timeout(self.limits.drain_timeout):
                    await self._drained.wait()
            except TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort("server shut down before the exchange finished")
        # Let the aborted transports run their connection_lost callbacks.
        for _ in range(3):
            if not self.connections:
                break
            await asyncio.sleep(0)

    # accepting -------------------------------------------------------------

    def _start_accepting(self) -> None:
        if self._accepting or self._stopping:
            return
        assert self._loop is not None
        self._accepting = True
        for sock in self.listeners:
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        assert self._loop is not None
        for sock in self.listeners:
            with contextlib.suppress(OSError, ValueError):
                self._loop.remove_reader(sock.fileno())

    def _room(self) -> bool:
        limits = self.limits
        if limits.max_clients is not None and self._accepted_total >= limits.max_clients:
            return False
        return limits.max_conns is None or self.stats.active + self._pending < limits.max_conns

    def _turning_away(self) -> bool:
        """Over ``max_conns`` with ``turn_away``: accept, and close at once."""
        limits = self.limits
        if not limits.turn_away:
            return False
        return limits.max_clients is None or self._accepted_total < limits.max_clients

    def _accept_ready(self, listener: socket.socket) -> None:
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):
            full = not self._room()
            if full and not self._turning_away():
                self._stop_accepting()
                return
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                self._backoff = ACCEPT_BACKOFF
                return
            except OSError as exc:
                if exc.errno in _CLIENT_GONE_ERRNOS:
                    continue
                if exc.errno in _RESOURCE_ERRNOS:
                    self.stats.errors += 1
                    self.log.warning(
                        f"accept: {exc.strerror.lower() if exc.strerror else exc}; "
                        f"pausing accepts for {self._backoff:g} s",
                        reason="resources",
                    )
                    self._stop_accepting()
                    self._loop.call_later(self._backoff, self._resume_after_backoff)
                    self._backoff = min(self._backoff * 2, ACCEPT_BACKOFF_MAX)
                    return
                raise
            # Behind a balancer the address to judge arrives in the PROXY header.
            if not self.proxy_protocol:
                refusal = self.refusal(addr)
                if refusal is not None:
                    self.stats.refused += 1
                    self.log.event(f"{format_sockaddr(addr)}: refused: {refusal}", "refused")
                    sock.close()
                    continue
            if full:
                self.stats.refused += 1
                self.log.event(
                    f"{format_sockaddr(addr)}: refused: too many connections "
                    f"(at most {self.limits.max_conns} at once)",
                    "refused",
                )
                sock.close()
                continue
            self._accepted_total += 1
            self.stats.connections += 1
            self._start_connection(sock, addr)
        # Batch used up: the reader callback fires again on the next turn.

    def _resume_after_backoff(self) -> None:
        if self._room():
            self._start_accepting()

    def _start_connection(self, sock: socket.socket, addr: object) -> None:
        assert self._loop is not None
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        factory = self._protocol_factory
        # The address accept() gave: getpeername() fails on a connection the
        # client reset before its protocol was made, and the log needs a peer.
        peer = format_sockaddr(addr) if addr else "unix:(unnamed)"
        # The sockaddr itself is kept only where a PROXY header may name
        # nobody and the balancer's address must be judged instead: an idle
        # connection does not carry a second copy of its peer.
        address = addr if self.proxy_protocol else None

        def make_protocol() -> ConnectionProtocol:
            protocol = factory(self)
            protocol.peer = peer
            protocol.address = address
            return protocol

        self._pending += 1
        # asyncio refuses a handshake timeout without TLS, hence the two forms.
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT}
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(make_protocol, sock, **tls)
        )
        task.add_done_callback(functools.partial(self._connect_done, sock, peer))

    def _connect_done(self, sock: socket.socket, peer: str, task: asyncio.Task[object]) -> None:
        self._pending -= 1
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            self.stats.errors += 1
            sock.close()
        if exc is not None:
            if self.ssl_context is not None:
                from ..tls import translate_ssl_error

                exc = translate_ssl_error(exc, where=peer, role="server")
            self.log.event(f"{peer}: closed: {exc}", "closed", peer=peer, reason=str(exc))
        if not self._accepting and not self._stopping and self._room():
            self._start_accepting()

    def closed(self, conn: ConnectionProtocol, reason: str | None) -> None:
        super().closed(conn, reason)
        if self._stopping and not self.connections:
            self._drained.set()
        limits = self.limits
        if limits.max_clients is not None and self._accepted_total >= limits.max_clients:
            if not self.connections:
                self.stop()
            return
        if not self._accepting and not self._stopping and self._room():
            self._start_accepting()

    async def _sweep_idle(self, idle_timeout: float) -> None:
        # A connection is closed after ``ticks`` sweeps without progress:
        # between idle_timeout and idle_timeout + interval seconds idle.
        ticks = 4
        interval = max(idle_timeout, 0.01) / ticks
        while True:
            await asyncio.sleep(interval)
            idle = []
            for conn in self.connections:
                if conn.bytes_in != conn.seen_in:
                    conn.seen_in = conn.bytes_in
                    conn.idle_ticks = 0
                else:
                    conn.idle_ticks += 1
                    if conn.idle_ticks > ticks:
                        idle.append(conn)
            for conn in idle:
                conn.abort(f"idle for more than {idle_timeout:g} s")


class DatagramEngine:
    """Serves a datagram service on one bound socket, many datagrams per wake-up."""

    def __init__(
        self,
        sock: socket.socket,
        service: Service,
        *,
        log: ServerLog | None = None,
        max_datagrams: int | None = None,
        max_datagram_size: int = MAX_UDP_PAYLOAD,
        accept_filter: Callable[[object], str | None] | None = None,
    ) -> None:
        self.sock = sock
        self.service = service
        self.log = log or ServerLog()
        self.stats = Stats()
        self.max_datagrams = max_datagrams
        self.max_datagram_size = max_datagram_size
        self.accept_filter = accept_filter
        self._stopped: asyncio.Future[None] | None = None
        self._show = service.shows_datagrams
        # Echo with nothing to look at: the reply is the datagram itself.
        self._plain_echo = (
            service.echoes_datagrams
            and accept_filter is None
            and not self._show
            and max_datagrams is None
        )
        # Batches bypass the socket object, so a traced socket (``--trace``)
        # keeps the one-call path whose every call it reports.
        self._batch = (
            DatagramBatch(BATCH_SLOTS, max_datagram_size + 1)
            if DatagramBatch.available()
            and type(sock) is socket.socket
            and sock.family in _BATCH_FAMILIES
            else None
        )

    async def serve(self) -> Stats:
        """Serve until ``stop()`` or ``max_datagrams``; return the counters."""
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable)
        try:
            await self._stopped
        finally:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(self.sock.fileno())
            self.sock.close()
        return self.stats

    @property
    def port(self) -> int | None:
        """The bound port (None for Unix sockets)."""
        return bound_port(self.sock)

    def stop(self) -> None:
        """Stop serving (safe from a signal handler)."""
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _readable(self) -> None:
        # The datagram hot path: everything looked up once per wake-up,
        # counters kept in locals, and the rare cases (oversize, access
        # control, printing, --once, services that compute an answer) sent
        # to ``_serve_one``.
        if self._batch is not None:
            self._readable_batched(self._batch)
            return
        sock = self.sock
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        limit = self.max_datagram_size
        size = limit + 1
        echo = self._plain_echo
        received = received_bytes = sent = sent_bytes = errors = 0
        try:
            for _ in range(DATAGRAM_BATCH):
                try:
                    data, addr = recvfrom(size)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    # ICMP errors from earlier sendto()s can surface here
                    # (WSAECONNRESET on Windows): not fatal.
                    errors += 1
                    self.log.event(f"recvfrom: {exc}", "error", True)
                    continue
                n = len(data)
                received += 1
                received_bytes += n
                if echo and n <= limit:
                    try:
                        sendto(data, addr)
                    except OSError as exc:
                        errors += 1
                        self._send_failed(addr, exc)
                    else:
                        sent += 1
                        sent_bytes += n
                    continue
                out, out_bytes, failed, stop = self._serve_one(data, addr, received)
                sent += out
                sent_bytes += out_bytes
                errors += failed
                if stop:
                    self.stop()
                    break
        finally:
            self._count(received, received_bytes, sent, sent_bytes, errors)

    def _readable_batched(self, batch: DatagramBatch) -> None:
        # Linux: recvmmsg/sendmmsg, up to ``batch.count`` datagrams per call.
        # A plain echo batch goes back in one sendmmsg with no Python object
        # per datagram; anything else is looked at one slot at a time.
        sock = self.sock
        family = sock.family
        limit = self.max_datagram_size
        echo = self._plain_echo
        received = received_bytes = sent = sent_bytes = errors = 0
        try:
            for _ in range(DATAGRAM_BATCH // batch.count):
                try:
                    n = batch.receive(sock)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    errors += 1
                    self.log.event(f"recvmmsg: {exc}", "error", True)
                    continue
                total = batch.total(n)
                received_bytes += total
                if echo and batch.longest(n) <= limit:
                    received += n
                    out = batch.echo(sock, n)
                    sent += out
                    sent_bytes += total if out == n else batch.total(out)
                    errors += n - out
                else:
                    stop = False
                    for i in range(n):
                        received += 1
                        out, out_bytes, failed, stop = self._serve_one(
                            batch.data(i), batch.address(i, family), received
                        )
                        sent += out
                        sent_bytes += out_bytes
                        errors += failed
                        if stop:
                            self.stop()
                            return
                if n < batch.count:
                    break  # drained
        finally:
            self._count(received, received_bytes, sent, sent_bytes, errors)

    def _count(
        self, received: int, received_bytes: int, sent: int, sent_bytes: int, errors: int
    ) -> None:
        stats = self.stats
        stats.datagrams_in += received
        stats.bytes_in += received_bytes
        stats.datagrams_out += sent
        stats.bytes_out += sent_bytes
        stats.errors += errors

    def _serve_one(self, data: bytes, addr: object, received: int) -> tuple[int, int, int, bool]:
        """Check, answer and reply to one datagram.

        Args:
            received: this datagram's number among those of this wake-up.

        Returns:
            (datagrams sent, bytes sent, errors, whether to stop after it).
        """
        verdict = self._check(data, addr, received)
        if verdict is None:
            return 0, 0, int(len(data) > self.max_datagram_size), False
        reply = self.service.answer_datagram(data)
        if reply is None:
            return 0, 0, 0, verdict
        try:
            self.sock.sendto(reply, addr)  # type: ignore[call-overload]
        except OSError as exc:
            self._send_failed(addr, exc)
            return 0, 0, 1, verdict
        return 1, len(reply), 0, verdict

    def _send_failed(self, addr: object, exc: OSError) -> None:
        # A full socket buffer drops the reply, as UDP may: counted, not logged.
        if not isinstance(exc, (BlockingIOError, InterruptedError)):
            self.log.event(f"{format_sockaddr(addr)}: sendto: {exc}", "error", True)

    def _check(self, data: bytes, addr: object, received: int) -> bool | None:
        """The rare cases of one datagram: None to drop it, else whether to stop after it."""
        if len(data) > self.max_datagram_size:
            err = MessageTooLargeError(
                f"datagram over {self.max_datagram_size} bytes dropped",
                size=None,
                limit=self.max_datagram_size,
            )
            self.log.event(f"{format_sockaddr(addr)}: {err}", "dropped")
            return None
        if self.accept_filter is not None:
            refusal = self.accept_filter(addr)
            if refusal is not None:
                self.stats.refused += 1
                self.log.event(f"{format_sockaddr(addr)}: refused: {refusal}", "refused")
                return None
        if self._show:
            self.log.received(format_sockaddr(addr), data)
        return (
            self.max_datagrams is not None
            and self.stats.datagrams_in + received >= self.max_datagrams
        )


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """Make SIGINT and SIGTERM call ``stop``; return a function that undoes it.

    On POSIX the loop's own signal handling is used; on Windows (no
    ``add_signal_handler``) a plain ``signal.signal`` handler schedules
    ``stop`` on the loop.
    """
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(loop, "add_signal_handler") and sys.platform != "win32":  # POSIX loops
        for sig in signals:
            loop.add_signal_handler(sig, stop)

        def undo() -> None:
            for sig in signals:
                loop.remove_signal_handler(sig)

        return undo
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(_signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop)

    for sig in signals:
        signal.signal(sig, handler)

    def undo_windows() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return undo_windows
