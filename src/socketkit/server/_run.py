"""Running a server from its settings: bind, announce, serve, summarise.

This is what ``socketkit tcp-server`` and ``udp-server`` (and the demo) call:
the CLI only parses arguments into a ``ServerConfig``, looking the service up
in ``SERVICES`` and the framing in ``socketkit.framing.CODECS``. ``workers``
> 1 hands over to ``_workers.run_workers``, which runs ``run_stream_server``
(passed in, so that the two modules do not import each other) in each worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .._sockets import MAX_UDP_PAYLOAD, bind_socket, local_name
from ..address import Endpoint, InetEndpoint, UnixEndpoint
from ..framing import Codec
from ._engine import DatagramEngine, Limits, StreamEngine, install_signal_handlers
from ._log import ServerLog, Stats
from ._loop import loop_name, run
from ._services import Hello, Service
from ._workers import run_workers

__all__ = ["ServerConfig", "run_datagram_server", "run_stream_server"]


@dataclass(slots=True)
class ServerConfig:
    """Everything a server needs, already validated.

    Attributes:
        endpoint: where to listen (host None: every interface, dual stack).
        family: AF_UNSPEC, AF_INET or AF_INET6.
        service: what the server does (``Hello()``, ``Echo()``, a
            ``HandlerService`` running one's own coroutine...).
        codec: the framing a stream service reads and writes with (None:
            the service's default: raw bytes, or the lecture's rule for hello).
        max_datagram_size: the largest datagram accepted (datagram servers;
            None: the largest UDP payload).
        once: one client (TCP) or one datagram (UDP), then exit.
        backlog: listen() backlog (None: the system maximum; 5 with ``once``).
        reuse_port: share the port with other processes (SO_REUSEPORT).
        workers: processes serving the port together (stream servers).
        limits: connection limits and timeouts.
        summary: log the stats line at exit.
        accept_filter: returns why an address may not connect, or None.
        proxy_protocol: expect a PROXY protocol header on every connection.
        ssl_context: serve TLS with this context (``socketkit.tls.server_context``).
    """

    endpoint: Endpoint = field(default_factory=lambda: InetEndpoint(None, 8080))
    family: int = socket.AF_UNSPEC
    service: Service = field(default_factory=Hello)
    codec: Codec | None = None
    max_datagram_size: int | None = None
    once: bool = False
    backlog: int | None = None
    reuse_port: bool = False
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    summary: bool = True
    accept_filter: Callable[[object], str | None] | None = None
    proxy_protocol: bool = False
    ssl_context: ssl.SSLContext | None = None


def _where(sock: socket.socket, endpoint: Endpoint) -> str:
    if isinstance(endpoint, UnixEndpoint):
        return str(endpoint.path)
    return f"port {sock.getsockname()[1]}"


def run_stream_server(
    config: ServerConfig,
    log: ServerLog,
    *,
    on_ready: Callable[[StreamEngine], None] | None = None,
    handle_signals: bool = True,
    announce: bool = True,
) -> Stats:
    """Serve a stream (TCP or Unix) service until a signal or ``once`` is done.

    Prints ``Server listening on port N`` (the lecture's line, with the real
    port after binding port 0) once clients can connect.

    Raises:
        ListenError: the address cannot be bound.
    """
    if config.workers > 1:
        return run_workers(config, log, run_stream_server)
    backlog = 5 if config.once and config.backlog is None else config.backlog
    sock = bind_socket(
        config.endpoint, family=config.family, backlog=backlog, reuse_port=config.reuse_port
    )
    limits = replace(config.limits)
    if config.once:
        limits.max_clients = 1
    engine = StreamEngine(
        [sock],
        config.service,
        codec=config.codec,
        limits=limits,
        log=log,
        accept_filter=config.accept_filter,
        proxy_protocol=config.proxy_protocol,
        ssl_context=config.ssl_context,
    )

    ready = f"Server listening on {_where(sock, config.endpoint)}" if announce else None
    return _serve(engine, sock, config, log, ready, on_ready, handle_signals)


def run_datagram_server(
    config: ServerConfig,
    log: ServerLog,
    *,
    on_ready: Callable[[DatagramEngine], None] | None = None,
    handle_signals: bool = True,
) -> Stats:
    """Serve a datagram (UDP or Unix datagram) service; ``once``: one datagram."""
    sock = bind_socket(
        config.endpoint,
        type=socket.SOCK_DGRAM,
        family=config.family,
        reuse_port=config.reuse_port,
    )
    engine = DatagramEngine(
        sock,
        config.service,
        log=log,
        max_datagrams=1 if config.once else None,
        max_datagram_size=config.max_datagram_size or MAX_UDP_PAYLOAD,
        accept_filter=config.accept_filter,
    )

    ready = f"UDP server listening on {_where(sock, config.endpoint)}"
    return _serve(engine, sock, config, log, ready, on_ready, handle_signals)


E = TypeVar("E", StreamEngine, DatagramEngine)


def _serve(
    engine: E,
    sock: socket.socket,
    config: ServerConfig,
    log: ServerLog,
    ready_line: str | None,
    on_ready: Callable[[E], None] | None,
    handle_signals: bool,
) -> Stats:
    """Run an engine on the chosen loop: announce, serve, clean up, summarise."""

    async def main() -> Stats:
        undo = install_signal_handlers(engine.stop) if handle_signals else None
        try:
            log.event(f"event loop: {loop_name()}", "loop", True)
            if ready_line is not None:
                log.listening(ready_line, address=local_name(sock))
            if on_ready is not None:
                on_ready(engine)
            return await engine.serve()
        finally:
            if undo is not None:
                undo()

    coro = main()
    try:
        stats = run(coro)
    finally:
        # Interrupted before the loop started it: close it, or Python warns
        # that the coroutine was never awaited.
        coro.close()
        sock.close()
        _unlink_unix(config.endpoint)
    if config.summary:
        log.summary(stats)
    return stats


def _unlink_unix(endpoint: Endpoint) -> None:
    if isinstance(endpoint, UnixEndpoint) and not endpoint.path.startswith("@"):
        with contextlib.suppress(OSError):
            os.unlink(endpoint.path)
