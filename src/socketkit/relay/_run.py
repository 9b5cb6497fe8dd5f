"""The relay program: two addresses, one link each connection (connect, listen, relay).

``connect`` is ``relay stdio tcp:HOST:PORT``, ``listen`` is ``relay
tcp-listen:PORT stdio`` (or an exec or broker handler on the accepted
connections), so every command takes this one path, on one event loop:

- no listener: open the remote side, then the local one, and link them;
- a stream listener: the server engine accepts, and every connection is a
  ``RelayProtocol`` whose other side is opened when it arrives (``fork``:
  each connection its own upstream; without it, one connection, then
  exit, as netcat does); ``-k`` to standard I/O and ``--broker`` are a
  ``Hub`` on the engine;
- a UDP listener: without ``fork`` the first peer becomes the connection
  (netcat); with it every client address gets its own upstream socket
  (``DatagramRelay``).

A connection that cannot reach its other side is closed and logged; the
listener keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._sockets import bind_socket, connect_socket, local_name
from ..access import AccessList
from ..address import InetEndpoint, UnixEndpoint, format_sockaddr
from ..errors import SettingError
from ..server import (
    Limits,
    ProtocolService,
    ServerConfig,
    ServerLog,
    StreamEngine,
    run,
    run_stream_server,
)
from ..server._engine import install_signal_handlers
from ._datagram import DatagramPeers, DatagramRelay
from ._exec import ExecCommand, open_exec, run_exec_on_socket
from ._grammar import RelayAddress
from ._hub import Hub
from ._link import Link, LinkOptions, OutputClosedError
from ._service import Opener, RelayProtocol, relay_factory
from ._sides import DatagramSideProtocol, DatagramSink, OpenOptions, address_family, open_side

__all__ = ["RelaySettings", "run_relay"]

#: Seconds a UDP client's upstream socket lives without traffic (``--idle-timeout``).
UDP_IDLE_TIMEOUT = 60.0


@dataclass(slots=True)
class RelaySettings:
    """Everything but the two addresses.

    Attributes:
        open: how to open addresses (family, timeouts, TLS, the log).
        link: directions, timeouts and filters of each link.
        keep_open: serve every connection (``-k``, ``,fork``), not one.
        limits: the engine's limits for listening relays.
        access: who may connect.
        broker: chat between the clients (``--broker``).
        backlog: listen() backlog (None: the system maximum).
        proxy_protocol: accepted connections start with a PROXY header.
        workers: processes sharing the listening port.
        summary: log the counters when a listening relay stops.
    """

    open: OpenOptions
    link: LinkOptions = field(default_factory=LinkOptions)
    keep_open: bool = False
    limits: Limits = field(default_factory=Limits)
    access: AccessList = field(default_factory=AccessList)
    broker: bool = False
    backlog: int | None = None
    proxy_protocol: bool = False
    workers: int = 1
    summary: bool = True

    @property
    def log(self) -> ServerLog:
        return self.open.log


def _name(addr: RelayAddress) -> str:
    return "stdio" if addr.kind == "stdio" else str(addr.endpoint or addr)


def _is_loopback(endpoint: InetEndpoint | UnixEndpoint) -> bool:
    if isinstance(endpoint, UnixEndpoint):
        return True
    if endpoint.host is None:
        return False
    if endpoint.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(endpoint.host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _listening_line(sock: socket.socket, addr: RelayAddress) -> str:
    """What -v prints once ready (tests and benchmarks wait for it)."""
    name = local_name(sock)
    kind = {"udp": " UDP", "tls": " TLS"}.get(addr.transport, "")
    name_tuple = sock.getsockname()
    if not isinstance(name_tuple, tuple):
        return f"listening{kind} on {name}"
    return f"listening{kind} on port {name_tuple[1]} ({name})"


def _announce(sock: socket.socket, addr: RelayAddress, settings: RelaySettings) -> None:
    log = settings.log
    if log.verbose or log.json_format:
        log.listening(_listening_line(sock, addr), address=local_name(sock))


def _finish(result: Any, log: ServerLog, name: str) -> None:
    log.event(
        f"{name}: {result.reason}; {result.sent} bytes sent, {result.received} received",
        "closed",
        True,
    )
    if result.error is not None and not isinstance(result.error, OutputClosedError):
        raise result.error


def run_relay(a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings) -> int:
    """Relay between ``a`` and ``b`` until done (one connection) or stopped (-k/fork).

    Returns:
        The exit code: 0, or the exec'd program's status when there is one
        connection and no listener.

    SIGTERM stops it at any moment with exit 0: while the loop runs, through
    the loop's handler (a listener drains, a link ends); before and after,
    through ``_stop_on_sigterm``.

    Raises:
        SocketkitError: opening failed, or (one connection) the link failed.
    """
    if isinstance(b, RelayAddress) and b.listener and not a.listener:
        a, b = b, a
    if isinstance(b, RelayAddress) and b.listener:
        raise SettingError("relay: only one side can listen")
    try:
        with _stop_on_sigterm():
            if not a.listener:
                return _run_to_end(_connect(a, b, settings))
            if a.transport == "udp":
                return _serve_udp(a, b, settings)
            return _serve_stream(a, b, settings)
    except Stopped:
        settings.log.event("terminated", "terminated", True)
        return 0


T = TypeVar("T")


def _run_to_end(main: Coroutine[Any, Any, T]) -> T:
    """``server.run(main)``; a coroutine that a signal kept from starting is closed
    (not left to warn that it was never awaited)."""
    try:
        return run(main, on_loop=_LOOP.append)
    finally:
        _LOOP.clear()
        main.close()


#: The loop ``_run_to_end`` runs, while it runs: SIGTERM before the loop's own
#: handler is in place is handed to it rather than raised where it lands
#: (inside the loop's start-up, an exception leaves it marked as running).
_LOOP: list[asyncio.AbstractEventLoop] = []


def _raise_stopped() -> None:
    raise Stopped()


class Stopped(KeyboardInterrupt):
    """SIGTERM outside the loop's own handler (while binding, starting or ending).

    A KeyboardInterrupt, so that it also leaves a loop that is starting up
    (asyncio lets only those and SystemExit out of a callback).
    """


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM raises ``Stopped`` (in the main thread; elsewhere nothing)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        if _LOOP:
            try:
                # asyncio lets a KeyboardInterrupt out of a callback.
                _LOOP[-1].call_soon_threadsafe(_raise_stopped)
            except RuntimeError:  # closed already: nothing runs on it any more
                pass
            else:
                return
        raise Stopped()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------ no listener


def _on_sigterm(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM calls ``stop`` (Ctrl-C stays KeyboardInterrupt: exit 130)."""
    loop = asyncio.get_running_loop()
    if not hasattr(signal, "SIGTERM"):
        return lambda: None
    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGTERM)

    return undo


async def _connect(a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings) -> int:
    log = settings.log
    options = settings.link
    direct = options.transform is None and options.observer is None
    if isinstance(b, ExecCommand) and a.transport in ("tcp", "unix") and os.name != "nt" and direct:
        endpoint = a.endpoint
        assert endpoint is not None
        family = address_family(a, settings.open)
        sock = connect_socket(
            endpoint,
            family=family,
            timeout=settings.open.connect_timeout,
            source=settings.open.source,
        )
        return run_exec_on_socket(b, sock, log, str(endpoint))
    if isinstance(b, RelayAddress) and b.kind == "stdio":
        a, b = b, a  # standard I/O is the local side: "sent" goes from it
    if isinstance(b, ExecCommand):
        options = dataclasses.replace(options, local=1)
    link = Link(options, names=(_name(a), str(b) if isinstance(b, ExecCommand) else _name(b)))
    undo = _on_sigterm(lambda: link.abort("terminated"))
    try:
        if isinstance(b, ExecCommand):
            await open_side(a, settings.open, link, 0)
            await open_exec(b, log, link, 1)
        else:
            await open_side(b, settings.open, link, 1)
            await open_side(a, settings.open, link, 0)
        result = await link.wait()
    except BaseException:
        link.abort("interrupted")
        raise
    finally:
        undo()
    _finish(result, log, _name(b) if isinstance(b, RelayAddress) else _name(a))
    return 0


# ------------------------------------------------------------- stream listener


def _opener(b: RelayAddress | ExecCommand, settings: RelaySettings) -> Opener:
    if isinstance(b, ExecCommand):
        return lambda link, index, conn: open_exec(b, settings.log, link, index, conn)
    return lambda link, index, conn: open_side(b, settings.open, link, index, counter=conn)


def _warn_open_to_all(
    a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings
) -> None:
    endpoint = a.endpoint
    assert endpoint is not None
    if not (settings.broker or isinstance(b, ExecCommand)) or _is_loopback(endpoint):
        return
    what = "the broker" if settings.broker else f"exec of {b}"
    allow = settings.access.names[0]
    guard = "" if settings.access.active else f"; restrict it with {allow} or bind 127.0.0.1"
    settings.log.warning(f"{what} on {a} is open to every host that can reach it{guard}")


def _serve_stream(a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings) -> int:
    endpoint = a.endpoint
    assert endpoint is not None
    opts = settings.open
    log = settings.log
    keep_open = settings.keep_open or a.fork or settings.broker
    if a.transport == "tls" and opts.tls_server is None:
        raise SettingError("tls-listen needs a certificate", hint="certificate")
    _warn_open_to_all(a, b, settings)
    stdio = isinstance(b, RelayAddress) and b.kind == "stdio"
    hub: Hub | None = None
    connections: list[RelayProtocol] = []
    factory: Callable[[Any], Any]
    if settings.broker or (keep_open and stdio):
        hub = Hub(log, broker=settings.broker, options=settings.link)
        factory = hub.factory
    else:
        options = dataclasses.replace(settings.link, idle_timeout=None)
        if stdio or isinstance(b, ExecCommand):
            # The local side, whose output --crlf rewrites and "sent" counts.
            options = dataclasses.replace(options, local=1)
        target = str(b) if isinstance(b, ExecCommand) else _name(b)
        tls = opts.tls_server if a.transport == "tls" else None
        make = relay_factory(_opener(b, settings), options, target, tls)

        def factory(host: Any) -> Any:
            protocol = make(host)
            if not keep_open:
                connections.append(protocol)  # type: ignore[arg-type]
            return protocol

    limits = dataclasses.replace(settings.limits)
    if limits.idle_timeout is None:
        # -w: the engine's sweep times the connections out (one timer for all).
        limits.idle_timeout = settings.link.idle_timeout
    if not keep_open:
        limits.max_clients = 1
    backlog = settings.backlog
    if a.get("backlog") is not None:
        backlog = int(a.get("backlog") or 0)
    config = ServerConfig(
        endpoint=endpoint,
        family=address_family(a, opts),
        service=ProtocolService(factory),
        backlog=backlog,
        workers=settings.workers if keep_open else 1,
        limits=limits,
        summary=settings.summary and keep_open,
        accept_filter=settings.access if settings.access.active else None,
        proxy_protocol=settings.proxy_protocol,
        # The hub's members use the engine's TLS; relayed connections their
        # own layer, which can half-close.
        ssl_context=opts.tls_server if a.transport == "tls" and hub is not None else None,
    )
    undo: list[Callable[[], None]] = []

    def ready(engine: StreamEngine) -> None:
        _announce(engine.listeners[0], a, settings)
        if hub is not None:
            task = asyncio.get_running_loop().create_task(hub.start())
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)
        if not keep_open:
            undo.append(_on_sigterm(engine.stop))

    try:
        run_stream_server(config, log, on_ready=ready, handle_signals=keep_open, announce=False)
    finally:
        for step in undo:
            with contextlib.suppress(Exception):
                step()
    for protocol in connections:
        error = protocol.link.error
        if error is not None and not isinstance(error, OutputClosedError):
            raise error
    return 0


#: Background tasks of the relay (asyncio keeps only weak references).
_TASKS: set[asyncio.Task[Any]] = set()


# ---------------------------------------------------------------- UDP listener


def _serve_udp(a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings) -> int:
    endpoint = a.endpoint
    assert endpoint is not None
    keep_open = settings.keep_open or a.fork
    to_udp = isinstance(b, RelayAddress) and b.transport == "udp"
    to_local = isinstance(b, ExecCommand) or (isinstance(b, RelayAddress) and b.kind == "stdio")
    if keep_open and not (to_udp or to_local):
        raise SettingError(
            "udp-listen with fork relays to udp: addresses, standard I/O or a program"
        )
    sock = bind_socket(endpoint, type=socket.SOCK_DGRAM, family=address_family(a, settings.open))
    try:
        if keep_open and to_local:
            return _serve_udp_peers(sock, a, b, settings)
        if keep_open:
            assert isinstance(b, RelayAddress)
            relay = DatagramRelay(
                sock,
                b,
                settings.open,
                log=settings.log,
                access=settings.access,
                idle_timeout=settings.limits.idle_timeout or UDP_IDLE_TIMEOUT,
            )

            async def serve() -> Any:
                undo = install_signal_handlers(relay.stop)
                try:
                    _announce(sock, a, settings)
                    return await relay.serve()
                finally:
                    undo()

            stats = _run_to_end(serve())
            if settings.summary:
                settings.log.summary(stats)
            return 0
        return _run_to_end(_udp_first_peer(sock, a, b, settings))
    finally:
        sock.close()


def _serve_udp_peers(
    sock: socket.socket, a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings
) -> int:
    """``listen -u -k``: every peer to standard I/O, or each to a program (``DatagramPeers``)."""
    log = settings.log

    async def open_other(link: Link, index: int) -> None:
        if isinstance(b, ExecCommand):
            await open_exec(b, log, link, index)
        else:
            await open_side(b, settings.open, link, index)

    peers = DatagramPeers(
        sock,
        b,
        log=log,
        access=settings.access,
        options=dataclasses.replace(settings.link, local=1),
        open_other=open_other,
    )

    async def serve() -> Any:
        undo = install_signal_handlers(peers.stop)
        try:
            _announce(sock, a, settings)
            return await peers.serve()
        finally:
            undo()

    stats = _run_to_end(serve())
    if settings.summary:
        log.summary(stats)
    return 0


async def _first_datagram(sock: socket.socket, access: AccessList, log: ServerLog) -> Any:
    """Wait for the first datagram from an admitted peer: (data, address)."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    while True:
        ready: asyncio.Future[None] = loop.create_future()

        def readable(future: asyncio.Future[None] = ready) -> None:
            if not future.done():
                future.set_result(None)

        loop.add_reader(sock.fileno(), readable)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())
        try:
            data, addr = sock.recvfrom(65536)
        except (BlockingIOError, InterruptedError):
            continue
        refusal = access.check(addr)
        if refusal is None:
            return data, addr
        log.event(f"{format_sockaddr(addr)}: refused: {refusal}", "refused")


async def _udp_first_peer(
    sock: socket.socket, a: RelayAddress, b: RelayAddress | ExecCommand, settings: RelaySettings
) -> int:
    """netcat's UDP listen: the first peer that sends becomes the connection."""
    log = settings.log
    _announce(sock, a, settings)
    data, addr = await _first_datagram(sock, settings.access, log)
    peer = format_sockaddr(addr)
    log.event(f"{peer}: connected", "connected", True, peer=peer)
    sock.connect(addr)
    options = dataclasses.replace(settings.link, local=1)  # standard I/O or a program
    link = Link(options, names=(peer, str(b) if isinstance(b, ExecCommand) else _name(b)))
    loop = asyncio.get_running_loop()
    protocol = DatagramSideProtocol(link, 0)
    protocol.data_received(data)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    sink = DatagramSink(transport)
    link.attach(0, sink, sink, protocol)
    undo = _on_sigterm(lambda: link.abort("terminated"))
    try:
        if isinstance(b, ExecCommand):
            await open_exec(b, log, link, 1)
        else:
            await open_side(b, settings.open, link, 1)
        result = await link.wait()
    finally:
        undo()
    _finish(result, log, peer)
    return 0
