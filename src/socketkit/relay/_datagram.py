"""UDP relays: ``udp-listen:P,fork udp:H:Q`` gives each client address its own upstream.

As socat's fork does for UDP: the first datagram from a new client
address opens a connected UDP socket to the target for that client; what
the client sends goes out on it, and what comes back on it is sent to the
client from the listening socket (so the client sees replies from the
address it talked to). Upstream sockets with no traffic either way for
``idle_timeout`` seconds are closed (one sweep, counted in ticks as the
server engine does), so a client that went away costs nothing for long.

The listening socket is drained by a reader callback with plain
non-blocking ``recvfrom`` calls, many datagrams per wake-up, as the
server engine's ``DatagramEngine`` does. While a client's upstream is
being opened, its datagrams wait in a short queue (``PENDING_DATAGRAMS``;
beyond it they are dropped, as UDP may).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from .._sockets import bound_port
from ..address import format_sockaddr
from ..errors import SocketkitError
from ..server import ServerLog, Stats
from ._access import AccessList
from ._grammar import RelayAddress
from ._sides import OpenOptions, address_family, connect_stream

__all__ = ["DatagramRelay"]

#: Datagrams handled per wake-up before other work gets a turn.
DATAGRAM_BATCH = 256
#: Datagrams kept per client while its upstream socket is being opened.
PENDING_DATAGRAMS = 64
#: Sweeps without traffic before a client's upstream is closed.
_IDLE_TICKS = 4


class _Client(asyncio.DatagramProtocol):
    """One client address and its upstream socket."""

    def __init__(self, relay: DatagramRelay, addr: Any) -> None:
        self.relay = relay
        self.addr = addr
        self.peer = format_sockaddr(addr)
        self.transport: asyncio.DatagramTransport | None = None
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
        if self.transport is None:
            if len(self.pending) < PENDING_DATAGRAMS:
                self.pending.append(data)
            return
        self.transport.sendto(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class DatagramRelay:
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
        self.sock = sock
        self.target = target
        self.opts = opts
        self.log = log
        self.access = access
        self.idle_timeout = idle_timeout
        self.stats = Stats()
        self.clients: dict[Any, _Client] = {}
        self._stopped: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int | None:
        return bound_port(self.sock)

    async def serve(self) -> Stats:
        loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable)
        sweeper = loop.create_task(self._sweep())
        try:
            await self._stopped
        finally:
            sweeper.cancel()
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(self.sock.fileno())
            for client in list(self.clients.values()):
                client.close()
            self.clients.clear()
        return self.stats

    def stop(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        clients = self.clients
        stats = self.stats
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
            client = clients.get(addr)
            if client is None:
                client = self._new_client(addr)
                if client is None:
                    continue
            client.send(data)

    def _new_client(self, addr: Any) -> _Client | None:
        refusal = self.access.check(addr)
        if refusal is not None:
            self.stats.refused += 1
            self.log.event(f"{format_sockaddr(addr)}: refused: {refusal}", "refused")
            return None
        client = _Client(self, addr)
        self.clients[addr] = client
        self.stats.connections += 1
        self.stats.active += 1
        self.stats.peak_active = max(self.stats.peak_active, self.stats.active)
        self.log.event(f"{client.peer}: connected", "connected", True, peer=client.peer)
        task = asyncio.get_running_loop().create_task(self._open(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return client

    async def _open(self, client: _Client) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self.target.endpoint
        assert endpoint is not None
        try:
            sock = await connect_stream(
                endpoint, family=address_family(self.target, self.opts), type=socket.SOCK_DGRAM
            )
            await loop.create_datagram_endpoint(lambda: client, sock=sock)
        except SocketkitError as exc:
            self.stats.errors += 1
            self._forget(client, str(exc))
            return
        if self.clients.get(client.addr) is not client:  # reclaimed meanwhile
            client.close()
            return
        pending, client.pending = client.pending, []
        for data in pending:
            client.send(data)

    def reply(self, client: _Client, data: bytes) -> None:
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
        if self.clients.get(client.addr) is client:
            del self.clients[client.addr]
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
