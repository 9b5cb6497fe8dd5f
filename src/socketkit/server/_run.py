"""Running a server from its settings: bind, announce, serve, summarise.

This is what ``socketkit tcp-server`` and ``udp-server`` (and the demo) call:
the CLI only parses arguments into a ``ServerConfig``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .._sockets import bind_socket, local_name
from ..address import Endpoint, InetEndpoint, UnixEndpoint
from ..framing import codec_by_name
from ._engine import DatagramEngine, Limits, StreamEngine, install_signal_handlers
from ._log import ServerLog, Stats
from ._loop import loop_name, run
from ._services import HELLO_REPLY, Service

__all__ = ["ServerConfig", "run_datagram_server", "run_stream_server"]

#: The lecture's UDP server answers every datagram with this.
UDP_HELLO_REPLY = b"Message received"


@dataclass(slots=True)
class ServerConfig:
    """Everything a server command needs, already validated."""

    endpoint: Endpoint = field(default_factory=lambda: InetEndpoint(None, 8080))
    family: int = socket.AF_UNSPEC
    service: str = "hello"
    frame: str | None = None
    max_message_size: int | None = None
    reply: bytes | None = None
    once: bool = False
    backlog: int | None = None
    reuse_port: bool = False
    limits: Limits = field(default_factory=Limits)
    summary: bool = True
    accept_filter: Callable[[object], str | None] | None = None

    def make_service(self, *, datagram: bool) -> Service:
        codec = codec_by_name(self.frame, self.max_message_size) if self.frame else None
        default_reply = UDP_HELLO_REPLY if datagram else HELLO_REPLY
        return Service(
            self.service, codec, reply=self.reply if self.reply is not None else default_reply
        )


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
) -> Stats:
    """Serve a stream (TCP or Unix) service until a signal or ``--once`` is done.

    Prints ``Server listening on port N`` (the lecture's line, with the real
    port after binding port 0) once clients can connect.
    """
    service = config.make_service(datagram=False)
    sock = bind_socket(
        config.endpoint,
        family=config.family,
        backlog=5 if config.once and config.backlog is None else config.backlog,
        reuse_port=config.reuse_port,
    )
    limits = config.limits
    if config.once:
        limits.max_clients = 1
    engine = StreamEngine(
        [sock], service, limits=limits, log=log, accept_filter=config.accept_filter
    )

    async def main() -> Stats:
        undo = install_signal_handlers(engine.stop) if handle_signals else None
        try:
            log.event(f"event loop: {loop_name()}", event="loop", verbose_only=True)
            log.listening(
                f"Server listening on {_where(sock, config.endpoint)}", address=local_name(sock)
            )
            if on_ready is not None:
                on_ready(engine)
            return await engine.serve()
        finally:
            if undo is not None:
                undo()

    try:
        stats = run(main())
    finally:
        sock.close()
        _unlink_unix(config.endpoint)
    if config.summary:
        log.summary(stats)
    return stats


def run_datagram_server(
    config: ServerConfig,
    log: ServerLog,
    *,
    on_ready: Callable[[DatagramEngine], None] | None = None,
    handle_signals: bool = True,
) -> Stats:
    """Serve a datagram (UDP or Unix datagram) service; ``--once``: one datagram."""
    service = config.make_service(datagram=True)
    sock = bind_socket(
        config.endpoint, type=socket.SOCK_DGRAM, family=config.family, reuse_port=config.reuse_port
    )
    engine = DatagramEngine(
        sock,
        service,
        log=log,
        max_datagrams=1 if config.once else None,
        max_datagram_size=config.max_message_size or 65507,
        accept_filter=config.accept_filter,
    )

    async def main() -> Stats:
        undo = install_signal_handlers(engine.stop) if handle_signals else None
        try:
            log.event(f"event loop: {loop_name()}", event="loop", verbose_only=True)
            log.listening(
                f"UDP server listening on {_where(sock, config.endpoint)}",
                address=local_name(sock),
            )
            if on_ready is not None:
                on_ready(engine)
            return await engine.serve()
        finally:
            if undo is not None:
                undo()

    try:
        stats = run(main())
    finally:
        sock.close()
        _unlink_unix(config.endpoint)
    if config.summary:
        log.summary(stats)
    return stats


def _unlink_unix(endpoint: Endpoint) -> None:
    if isinstance(endpoint, UnixEndpoint) and not endpoint.path.startswith("@"):
        import os

        with contextlib.suppress(OSError):
            os.unlink(endpoint.path)
