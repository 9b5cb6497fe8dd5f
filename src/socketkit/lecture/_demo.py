"""``socketkit demo``: the lecture's two exchanges, both sides, on loopback.

Each server runs in a thread of this process on a free port (port 0, read
back after binding); the client runs once it has printed its listening line.
Every line is labelled with the program that printed it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import TextIO

from ..address import InetEndpoint
from ..errors import SocketkitError
from ..server import (
    DatagramEngine,
    ServerConfig,
    ServerLog,
    StreamEngine,
    run_datagram_server,
    run_stream_server,
)
from ._clients import ClientConfig, run_tcp_client, run_udp_client

__all__ = ["run_demo"]

Engine = StreamEngine | DatagramEngine

#: Seconds the demo waits for a server thread to be ready or to finish.
DEMO_TIMEOUT = 10.0


class _Labelled:
    """A text stream that prefixes each line with a label, shared under a lock."""

    def __init__(self, target: TextIO, label: str, lock: threading.Lock) -> None:
        self.target = target
        self.label = label
        self.lock = lock
        self._partial = ""

    def write(self, text: str) -> int:
        with self.lock:
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self.target.write(f"{self.label:>12} | {line}\n")
            self.target.flush()
        return len(text)

    def flush(self) -> None:
        pass


def _exchange(
    title: str,
    out: TextIO,
    lock: threading.Lock,
    serve: Callable[[ServerConfig, ServerLog, Callable[[Engine], None]], object],
    client: Callable[[ClientConfig, TextIO], int],
    server_label: str,
    client_label: str,
) -> None:
    out.write(f"== {title}\n")
    out.flush()
    ready = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []
    log = ServerLog(_Labelled(out, server_label, lock), _Labelled(out, server_label, lock))  # type: ignore[arg-type]

    def on_ready(engine: Engine) -> None:
        assert engine.port is not None  # an IP server
        port.append(engine.port)
        ready.set()

    def server_main() -> None:
        try:
            config = ServerConfig(endpoint=InetEndpoint("127.0.0.1", 0), once=True, summary=False)
            serve(config, log, on_ready)
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=server_main, name=server_label, daemon=True)
    thread.start()
    if not ready.wait(DEMO_TIMEOUT) or failure:
        raise failure[0] if failure else SocketkitError(f"{server_label} did not start")
    config = ClientConfig(endpoint=InetEndpoint("127.0.0.1", port[0]), family=socket.AF_INET)
    client(config, _Labelled(out, client_label, lock))  # type: ignore[arg-type]
    thread.join(DEMO_TIMEOUT)
    if failure:
        raise failure[0]
    if thread.is_alive():
        raise SocketkitError(f"{server_label} did not finish within {DEMO_TIMEOUT:g} s")


#: The headings of the two exchanges, in the library's words.
DEMO_TITLES = ("TCP: server (one client)  <->  client", "UDP: server (one datagram)  <->  client")


def run_demo(out: TextIO, *, titles: tuple[str, str] = DEMO_TITLES) -> int:
    """Run the TCP then the UDP exchange; return 0 when both succeeded.

    Args:
        out: where both sides' lines go, labelled.
        titles: the headings of the TCP and the UDP exchange (the command
            line names its commands there).
    """
    lock = threading.Lock()
    _exchange(
        titles[0],
        out,
        lock,
        lambda c, log, ready: run_stream_server(c, log, on_ready=ready, handle_signals=False),
        run_tcp_client,
        "tcp-server",
        "tcp-client",
    )
    _exchange(
        titles[1],
        out,
        lock,
        lambda c, log, ready: run_datagram_server(c, log, on_ready=ready, handle_signals=False),
        run_udp_client,
        "udp-server",
        "udp-client",
    )
    out.write("== both exchanges done\n")
    out.flush()
    return 0
