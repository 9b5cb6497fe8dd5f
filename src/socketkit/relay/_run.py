"""The relay program: open two addresses and pump between them (connect, listen, relay).

``connect`` is ``relay stdio tcp:HOST:PORT``, ``listen`` is ``relay
tcp-listen:PORT stdio`` (or an exec or broker handler on the accepted
connections), so every command takes this one path.

Order: listeners are opened first (and announced with ``-v``: ``listening
on port N (ADDR)``), then, per accepted connection, the other side is
opened, so with ``fork`` each connection gets its own upstream. A
connection that cannot reach its upstream is closed and logged; the
listener keeps serving.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..access import AccessList
from ..address import InetEndpoint, UnixEndpoint
from ..errors import SettingError
from ._channels import Channel, StdioChannel
from ._grammar import RelayAddress
from ._open import Accepted, Listener, Log, OpenOptions, open_channel, open_listener
from ._pump import OutputClosedError, PumpOptions, PumpResult, pump
from ._serve import ExecCommand, Hub, run_exec, serve

__all__ = ["RelaySettings", "run_relay", "terminate_cleanly"]


@dataclass(slots=True)
class RelaySettings:
    """Everything but the two addresses."""

    open: OpenOptions
    pump: PumpOptions = field(default_factory=PumpOptions)
    keep_open: bool = False
    max_conns: int | None = None
    access: AccessList = field(default_factory=AccessList)
    broker: bool = False
    backlog: int | None = None
    on_listening: Callable[[Listener], None] | None = None

    @property
    def log(self) -> Log:
        return self.open.log


class Terminated(BaseException):
    """SIGTERM arrived: stop serving (the CLI exits 0)."""


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` in the main thread."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_loopback(listener: Listener) -> bool:
    endpoint = listener.addr.endpoint
    if isinstance(endpoint, UnixEndpoint):
        return True
    assert isinstance(endpoint, InetEndpoint)
    if endpoint.host is None:
        return False
    if endpoint.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(endpoint.host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _announce(listener: Listener, settings: RelaySettings) -> None:
    """Say the listener is ready (``-v``) and tell whoever asked (``on_listening``)."""
    settings.log.info(listener.listening_line())
    if settings.on_listening is not None:
        settings.on_listening(listener)


def _finish(result: PumpResult, log: Log, name: str) -> None:
    log.info(
        f"{name}: {result.reason}; {result.sent} bytes sent, {result.received} received"
        + (f" (spliced {''.join(result.spliced)})" if result.spliced else "")
    )
    if result.error is not None and not isinstance(result.error, OutputClosedError):
        raise result.error


def run_relay(
    a: RelayAddress,
    b: RelayAddress | ExecCommand,
    settings: RelaySettings,
) -> int:
    """Relay between ``a`` and ``b`` until done (one connection) or terminated (-k/fork).

    Returns:
        The exit code: 0, or the exec'd program's status when there is one
        connection and no listener.

    Raises:
        SocketkitError: opening failed, or (one connection) the pump failed.
    """
    log = settings.log
    if isinstance(b, RelayAddress) and b.listener and not a.listener:
        a, b = b, a
    if not a.listener:
        assert isinstance(b, RelayAddress | ExecCommand)
        first = open_channel(a, settings.open)
        try:
            return _handle(first, b, settings, name=str(a))
        finally:
            first.close()
    keep_open = settings.keep_open or a.fork
    if a.transport == "udp" and keep_open:
        raise SettingError(
            "keep-open and fork are not supported for UDP listeners (UDP has no connections)"
        )
    listener = open_listener(a, settings.open, backlog=settings.backlog)
    try:
        _announce(listener, settings)
        if (settings.broker or isinstance(b, ExecCommand)) and not _is_loopback(listener):
            what = "the broker" if settings.broker else f"exec of {b}"
            allow = settings.access.names[0]
            guard = (
                "" if settings.access.active else f"; restrict it with {allow} or bind 127.0.0.1"
            )
            log.warn(
                f"warning: {what} on {listener.name} is open to every host that can reach it{guard}"
            )
        hub: Hub | None = None
        if settings.broker or (keep_open and isinstance(b, RelayAddress) and b.kind == "stdio"):
            hub = Hub(log, broker=settings.broker, options=settings.pump, stdio=StdioChannel())
            hub.start_stdin()

        def handler(acc: Accepted) -> None:
            channel = listener.channel(acc)
            if hub is not None:
                hub.serve_member(channel)
                return
            try:
                _handle(channel, b, settings, name=acc.peer)
            finally:
                channel.close()

        serve(
            listener,
            handler,
            keep_open=keep_open,
            access=settings.access,
            log=log,
            max_conns=settings.max_conns,
        )
        return 0
    finally:
        listener.close()


def _handle(
    channel: Channel, other: RelayAddress | ExecCommand, settings: RelaySettings, name: str
) -> int:
    if isinstance(other, ExecCommand):
        status = run_exec(other, channel, settings.log, name)
        return status if name == "stdio" else 0
    if other.listener:
        second = open_listener(other, settings.open, backlog=settings.backlog)
        try:
            _announce(second, settings)
            acc = second.accept()
            refusal = settings.access.check(acc.addr)
            if refusal is not None:
                settings.log.warn(f"refused {acc.peer}: {refusal}")
                acc.close()
                return 0
            peer = second.channel(acc)
        finally:
            second.close()
    else:
        peer = open_channel(other, settings.open)
    try:
        # Standard I/O is always side a, so "sent" (and --crlf) means what
        # goes from this terminal to the network, for connect and listen alike.
        if isinstance(other, RelayAddress) and other.kind == "stdio":
            result = pump(peer, channel, settings.pump)
        else:
            result = pump(channel, peer, settings.pump)
        _finish(result, settings.log, name)
    finally:
        peer.close()
    return 0
