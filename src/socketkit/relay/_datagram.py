"""UDP relays: ``udp-listen:P,fork udp:H:Q`` gives each client address its own upstream;
``listen -u -k`` serves every peer to standard I/O or a program each (``DatagramPeers``).

As socat's fork does for UDP: the first datagram from a new client
address opens a connected UDP socket to the target for that client; what
the client sends goes out on it, and what comes back on it is sent to the
client from the listening socket (so the client sees replies from the
address it talked to). Upstream sockets with no traffic either way for
``idle_timeout`` seconds are closed (one sweep, counted in ticks as the
server engine does), so a client that went away costs nothing for long.

The listening socket is drained by a reader callback, many datagrams per
wake-up, as the server engine's ``DatagramEngine`` does. While a client's
upstream is being opened, its datagrams wait in a short queue
(``PENDING_DATAGRAMS``; beyond it they are dropped, as UDP may).

Two paths move the datagrams; both keep each datagram whole and each
client's datagrams in order, and map clients and reclaim them alike:

- Batched (Linux, plain sockets: ``_mmsg.DatagramBatch``): the listening
  socket is read with recvmmsg, up to ``BATCH_SLOTS`` datagrams per call;
  the datagrams of each client in the batch go to its upstream in one
  sendmmsg straight from the receive buffers (``forward``), and clients are
  looked up by their raw ``struct sockaddr`` (no address object per
  datagram). Each upstream socket is read with recvmmsg by a reader
  callback of its own, and what it got goes to the client in one sendmmsg
  from the listening socket (``send_to``). A full socket buffer drops the
  rest of a batch (counted in ``errors``), as the reply path always did.
- One call per datagram (other platforms, and ``--trace``, whose traced
  sockets must show every ``recvfrom``/``sendto``): ``recvfrom`` on the
  listening socket, an asyncio datagram transport per upstream, ``sendto``
  back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any

from .._mmsg import DatagramBatch
from .._sockets import MAX_UDP_PAYLOAD, bound_port, plain_sockets
from ..access import AccessList
from ..address import format_sockaddr
from ..errors import SocketkitError
from ..server import ServerLog, Stats
from ._exec import ExecCommand
from ._grammar import RelayAddress
from ._link import Link, LinkOptions, SideProtocol
from ._sides import OpenOptions, address_family, connect_stream

__all__ = ["DatagramPeers", "DatagramRelay"]

#: Datagrams handled per wake-up before other work gets a turn.
DATAGRAM_BATCH = 256
#: Datagrams kept per client while its upstream socket is being opened.
PENDING_DATAGRAMS = 64
#: Sweeps without traffic before a client's upstream is closed.
_IDLE_TICKS = 4
#: Datagrams per recvmmsg/sendmmsg call (Linux), as in the server engine.
BATCH_SLOTS = 64
#: Bytes per batch slot: every UDP datagram whole (IPv6's largest is 65527).
BATCH_SLOT_SIZE = 65536


class _Client(asyncio.DatagramProtocol):
    """One client address and its upstream socket.

    ``key``: what the relay's table knows it by (the address on the
    one-call path, the raw sockaddr bytes on the batched one). The upstream
    is ``transport`` on the one-call path, ``sock`` (read by the relay's
    reader callback) on the batched one.
    """

    def __init__(self, relay: DatagramRelay, addr: Any, key: Any) -> None:
        self.relay = relay
        self.addr = addr
        self.key = key
        self.peer = format_sockaddr(addr)
        self.transport: asyncio.DatagramTransport | None = None
        self.sock: socket.socket | None = None
        self.pending: list[bytes] = []
        self.idle_ticks = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.idle_ticks = 0
        self.relay.reply(self, data)

    def error_received(self, exc: Exception) -> None:
        self.relay.log.event(f"{self.peer}: upstream: {exc}", "error", True)

    def send(self, data: bytes) -> None:
        self.idle_ticks = 0
        if self.sock is not None:
            try:
                self.sock.send(data)
            except OSError:
                self.relay.stats.errors += 1  # full buffer or refused: dropped, as UDP may
            return
        if self.transport is None or self.pending:
            # Not open yet, or open but what waited is not sent yet
            # (``connection_made`` comes before ``_open`` sends it): queue
            # behind it, so that the client's datagrams stay in order.
            if len(self.pending) < PENDING_DATAGRAMS:
                self.pending.append(data)
            return
        self.transport.sendto(data)

    def close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        if self.transport is not None:
            self.transport.close()


class _BoundDatagrams:
    """A bound UDP socket drained by a reader callback until ``stop()``: the
    loop both UDP relays share. Subclasses say what a datagram from an
    address does (``_received``), and what starts and ends with serving."""

    def __init__(self, sock: socket.socket, *, log: ServerLog, access: AccessList) -> None:
        self.sock = sock
        self.log = log
        self.access = access
        self.stats = Stats()
        self._stopped: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int | None:
        return bound_port(self.sock)

    async def serve(self) -> Stats:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self.sock.setblocking(False)
        await self._starting()
        loop.add_reader(self.sock.fileno(), self._readable)
        try:
            await self._stopped
        finally:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(self.sock.fileno())
            self._ending()
        return self.stats

    def stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def _starting(self) -> None:
        """Before the first datagram is read."""

    def _ending(self) -> None:
        """Once serving stopped: close what the peers had."""

    def _received(self, data: bytes, addr: Any) -> None:
        raise NotImplementedError

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        stats = self.stats
        received = self._received
        for _ in range(DATAGRAM_BATCH):
            try:
                data, addr = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                stats.errors += 1
                self.log.event(f"recvfrom: {exc}", "error", True)
                continue
            stats.datagrams_in += 1
            stats.bytes_in += len(data)
            received(data, addr)

    def _admitted(self, addr: Any) -> bool:
        """Whether a new peer may talk to us (refusals are counted and logged)."""
        refusal = self.access.check(addr)
        if refusal is None:
            return True
        self.stats.refused += 1
        self.log.event(f"{format_sockaddr(addr)}: refused: {refusal}", "refused")
        return False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class DatagramRelay(_BoundDatagrams):
    """A bound UDP socket relaying each client address to its own upstream socket."""

    def __init__(
        self,
        sock: socket.socket,
        target: RelayAddress,
        opts: OpenOptions,
        *,
        log: ServerLog,
        access: AccessList,
        idle_timeout: float,
    ) -> None:
        super().__init__(sock, log=log, access=access)
        self.target = target
        self.opts = opts
        self.idle_timeout = idle_timeout
        self.clients: dict[Any, _Client] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Batches bypass the socket objects, so a traced socket (``--trace``)
        # keeps the one-call path whose every call it reports.
        batched = (
            DatagramBatch.available()
            and plain_sockets()
            and type(sock) is socket.socket
            and sock.family in (socket.AF_INET, socket.AF_INET6)
        )
        #: Clients' datagrams (listening socket -> upstreams), and replies
        #: (an upstream -> its client); None on the one-call path.
        self._inbound = DatagramBatch(BATCH_SLOTS, BATCH_SLOT_SIZE) if batched else None
        self._outbound = DatagramBatch(BATCH_SLOTS, BATCH_SLOT_SIZE) if batched else None

    @property
    def batched(self) -> bool:
        """Whether datagrams move in batches (recvmmsg/sendmmsg)."""
        return self._inbound is not None

    async def _starting(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def _ending(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.clients.values()):
            client.close()
        self.clients.clear()

    def _received(self, data: bytes, addr: Any) -> None:
        client = self.clients.get(addr)
        if client is None:
            client = self._new_client(addr, addr)
            if client is None:
                return
        client.send(data)

    def _readable(self) -> None:
        batch = self._inbound
        if batch is None:
            super()._readable()
            return
        # Linux: a recvmmsg, then per client one sendmmsg of its datagrams
        # from the receive buffers, in the order they came.
        sock = self.sock
        stats = self.stats
        clients = self.clients
        for _ in range(DATAGRAM_BATCH // batch.count):
            try:
                n = batch.receive(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                stats.errors += 1
                self.log.event(f"recvmmsg: {exc}", "error", True)
                continue
            stats.datagrams_in += n
            stats.bytes_in += batch.total(n)
            groups: dict[_Client, list[int]] = {}
            for i, key in enumerate(batch.names(n)):
                client = clients.get(key)
                if client is None:
                    client = self._new_client(batch.address(i, sock.family), key)
                    if client is None:
                        continue
                slots = groups.get(client)
                if slots is None:
                    groups[client] = [i]
                else:
                    slots.append(i)
            for client, slots in groups.items():
                client.idle_ticks = 0
                upstream = client.sock
                if upstream is None:  # still being opened: copies wait (``send``)
                    for i in slots:
                        client.send(batch.data(i))
                    continue
                batch.refused = 0
                sent = batch.forward(upstream, slots)
                if sent < len(slots):
                    stats.errors += len(slots) - sent
                    if batch.refused:
                        self._upstream_error(
                            client, OSError(batch.refused, os.strerror(batch.refused))
                        )
            if n < batch.count:
                return  # drained

    def _upstream_readable(self, client: _Client) -> None:
        # Linux: what one upstream sent, to its client in one sendmmsg.
        batch = self._outbound
        assert batch is not None
        stats = self.stats
        for _ in range(DATAGRAM_BATCH // batch.count):
            upstream = client.sock
            if upstream is None:
                return
            try:
                n = batch.receive(upstream)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._upstream_error(client, exc)  # ICMP from an earlier send
                continue
            client.idle_ticks = 0
            if n == 1:  # one datagram: the socket's own sendto costs less than a ctypes call
                self.reply(client, batch.view(0))
                return
            batch.refused = 0
            sent = batch.send_to(self.sock, n, client.key)
            stats.datagrams_out += sent
            stats.bytes_out += batch.total(sent)
            if sent < n:
                stats.errors += n - sent  # socket buffer full: UDP may drop, so do we
                if batch.refused:
                    code = batch.refused
                    self.log.event(f"{client.peer}: sendmmsg: {os.strerror(code)}", "error", True)
            if n < batch.count:
                return

    def _upstream_error(self, client: _Client, exc: Exception) -> None:
        self.log.event(f"{client.peer}: upstream: {exc}", "error", True)

    def _new_client(self, addr: Any, key: Any) -> _Client | None:
        if not self._admitted(addr):
            return None
        client = _Client(self, addr, key)
        self.clients[key] = client
        self.stats.connections += 1
        self.stats.active += 1
        self.stats.peak_active = max(self.stats.peak_active, self.stats.active)
        self.log.event(f"{client.peer}: connected", "connected", True, peer=client.peer)
        self._spawn(self._open(client))
        return client

    async def _open(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self.target.endpoint
        assert endpoint is not None
        try:
            sock = await connect_stream(
                endpoint, family=address_family(self.target, self.opts), type=socket.SOCK_DGRAM
            )
            if self._outbound is not None and type(sock) is socket.socket:
                if self.clients.get(client.key) is not client:  # reclaimed meanwhile
                    sock.close()
                    return
                client.sock = sock
                loop.add_reader(sock.fileno(), self._upstream_readable, client)
            else:
                await loop.create_datagram_endpoint(lambda: client, sock=sock)
        except SocketkitError as exc:
            self.stats.errors += 1
            self._forget(client, str(exc))
            return
        if self.clients.get(client.key) is not client:  # reclaimed meanwhile
            client.close()
            return
        pending, client.pending = client.pending, []
        for data in pending:
            client.send(data)

    def reply(self, client: _Client, data: bytes | memoryview) -> None:
        try:
            self.sock.sendto(data, client.addr)
        except (BlockingIOError, InterruptedError):
            self.stats.errors += 1  # socket buffer full: UDP may drop, so do we
            return
        except OSError as exc:
            self.stats.errors += 1
            self.log.event(f"{client.peer}: sendto: {exc}", "error", True)
            return
        self.stats.datagrams_out += 1
        self.stats.bytes_out += len(data)

    def _forget(self, client: _Client, reason: str | None) -> None:
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
            self.stats.active -= 1
        client.close()
        self.log.closed(client.peer, reason, 0, 0)

    async def _sweep(self) -> None:
        interval = max(self.idle_timeout, 0.01) / _IDLE_TICKS
        while True:
            await asyncio.sleep(interval)
            idle = []
            for client in self.clients.values():
                client.idle_ticks += 1
                if client.idle_ticks > _IDLE_TICKS:
                    idle.append(client)
            for client in idle:
                self._forget(client, None)


# ------------------------------------------------- -k to standard I/O or a program


class _PeerFeed(SideProtocol):
    """Side 0 of a link whose bytes come from datagrams the listener hands on."""

    __slots__ = ()


class _PeerSink:
    """The UDP peer(s) a link writes to: each chunk goes out of the listening
    socket (cut into datagrams), so peers see replies from the address they
    talked to. ``peers``: one address, or the listener's table of all of them."""

    __slots__ = ("closed", "on_close", "peers", "sock")

    def __init__(self, sock: socket.socket, peers: Any, on_close: Any = None) -> None:
        self.sock = sock
        self.peers = peers
        self.on_close = on_close
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        view = memoryview(data)
        targets = list(self.peers) if isinstance(self.peers, dict) else [self.peers]
        for start in range(0, len(view), MAX_UDP_PAYLOAD):
            chunk = view[start : start + MAX_UDP_PAYLOAD]
            for addr in targets:
                # Full socket buffer or a peer gone: UDP may drop, so do we.
                with contextlib.suppress(OSError):
                    self.sock.sendto(chunk, addr)

    def write_eof(self) -> None:
        """UDP has no end of stream."""

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                asyncio.get_running_loop().call_soon(self.on_close)

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As a transport's: the listening socket, and the one peer (if one)."""
        if name == "socket":
            return self.sock
        if name == "sockname":
            with contextlib.suppress(OSError):
                return self.sock.getsockname()
        if name == "peername" and not isinstance(self.peers, dict):
            return self.peers
        return default


class DatagramPeers(_BoundDatagrams):
    """``listen -u -k``: every peer of a bound UDP socket, to standard I/O or a program.

    To standard I/O (one link for all): what any admitted peer sends goes to
    standard output, what standard input gives goes to every peer heard from
    so far. To a program (``-e``/``-c``, as ncat): each new peer address gets
    a program of its own, through pipes; it lives until it exits (or ``-i``).
    """

    def __init__(
        self,
        sock: socket.socket,
        other: Any,
        *,
        log: ServerLog,
        access: AccessList,
        options: LinkOptions,
        open_other: Any,
    ) -> None:
        super().__init__(sock, log=log, access=access)
        self.other = other
        self.options = options
        #: Opens side 1 of a link: (link, index) -> attached.
        self.open_other = open_other
        self.per_peer = isinstance(other, ExecCommand)
        self.links: dict[Any, Link] = {}
        self.peers: dict[Any, None] = {}  # insertion-ordered set
        self._shared: tuple[Link, _PeerFeed] | None = None

    async def _starting(self) -> None:
        if not self.per_peer:
            link = Link(self.options, names=("udp peers", "stdio"))
            feed = _PeerFeed(link, 0)
            link.attach(0, None, _PeerSink(self.sock, self.peers), feed)
            self._shared = (link, feed)
            await self.open_other(link, 1)

    def _ending(self) -> None:
        links = list(self.links.values())
        if self._shared is not None:
            links.append(self._shared[0])
        for link in links:
            link.finish("terminated")

    def _received(self, data: bytes, addr: Any) -> None:
        if addr not in self.peers and not self._admit(addr):
            return
        if not data:
            return  # an empty datagram is no end of stream
        if self._shared is not None:
            self._shared[1].data_received(data)
        elif addr in self.links:
            self.links[addr].sides[0].feeds.data_received(data)

    def _admit(self, addr: Any) -> bool:
        if not self._admitted(addr):
            return False
        peer = format_sockaddr(addr)
        self.peers[addr] = None
        self.stats.connections += 1
        self.log.event(f"{peer}: connected", "connected", True, peer=peer)
        if self.per_peer:
            self._start_link(addr, peer)
        return True

    def _start_link(self, addr: Any, peer: str) -> None:
        link = Link(self.options, names=(peer, str(self.other)))
        self.links[addr] = link
        self.stats.active += 1
        self.stats.peak_active = max(self.stats.peak_active, self.stats.active)
        sink = _PeerSink(self.sock, addr, on_close=lambda: link.finish("closed"))
        link.attach(0, None, sink, _PeerFeed(link, 0))
        self._spawn(self._run_link(addr, peer, link))

    async def _run_link(self, addr: Any, peer: str, link: Link) -> None:
        try:
            await self.open_other(link, 1)
            result = await link.wait()
            reason = str(result.error) if result.error is not None else None
            self.log.closed(peer, reason, result.received, result.sent)
        except SocketkitError as exc:
            self.stats.errors += 1
            link.abort(str(exc))
            self.log.closed(peer, str(exc), 0, 0)
        finally:
            # The next datagram from this address starts a new program.
            if self.links.get(addr) is link:
                del self.links[addr]
                del self.peers[addr]
                self.stats.active -= 1
