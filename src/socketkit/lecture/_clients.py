"""The lecture's TCP and UDP clients, on the blocking library.

How the TCP client interoperates with every server of the lecture:
- With one message (the default) it sends the bytes exactly as the C and
  Python clients do, with no newline, then half-closes (``shutdown(SHUT_WR)``).
  A C or Python server's single ``recv`` gets the message; a Java server's
  ``readLine`` sees the end of the stream and returns the line. The bytes on
  the wire are the original client's.
- It then reads the reply up to a newline or the end of the stream: the C
  server sends raw bytes and closes, the Java server sends a line.
- Over TLS (``--tls``) the half-close is left out: TLS has no portable
  half-close, and the server's answer to a raw message ends the exchange.
- With ``count`` > 1 the messages go as lines (a newline after each) over one
  connection, and each reply is read as a line: a half-close is possible only
  once, after the last message.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import TextIO

from ..address import DEFAULT_HOST, DEFAULT_PORT, Endpoint, InetEndpoint
from ..errors import BrokenError
from ..framing import LineCodec
from ..server._log import show_message
from ..sync import Connection, connect, open_datagram_client

__all__ = ["TCP_MESSAGE", "UDP_MESSAGE", "ClientConfig", "run_tcp_client", "run_udp_client"]

TCP_MESSAGE = b"Hello from client"
UDP_MESSAGE = b"Hello from UDP client"
#: The lecture's buffer: 1024 bytes, one of them for C's terminating NUL.
LECTURE_BUFFER = 1023


@dataclass(slots=True)
class ClientConfig:
    """What a lecture client needs, already validated."""

    endpoint: Endpoint = field(default_factory=lambda: InetEndpoint(DEFAULT_HOST, DEFAULT_PORT))
    family: int = socket.AF_UNSPEC
    message: bytes | None = None
    count: int = 1
    #: Seconds each step may take; None: no limit.
    timeout: float | None = 5.0
    retries: int = 2
    max_reply_size: int = 64 * 1024
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    #: Seconds during which a refused connect is tried again (a server that
    #: is starting); 0: fail at once.
    wait_for_server: float = 0.0


def _connect(config: ClientConfig) -> Connection:
    """Connect; while ``wait_for_server`` lasts, a refused connect is retried."""
    return connect(
        config.endpoint,
        family=config.family,
        connect_timeout=config.timeout,
        timeout=config.timeout,
        ssl_context=config.ssl_context,
        server_hostname=config.server_hostname,
        wait_for_server=config.wait_for_server,
    )


def run_tcp_client(
    config: ClientConfig, out: TextIO, err: TextIO | None = None, *, verbose: bool = False
) -> int:
    """Connect, send the message (``count`` times), print each reply; return 0.

    Raises:
        SocketkitError: connection refused, host not found, timed out, or the
            server closed the connection before replying.
    """
    message = TCP_MESSAGE if config.message is None else config.message
    reply_codec = LineCodec(config.max_reply_size)
    with _connect(config) as conn:
        if verbose and err is not None:
            err.write(f"connected to {conn.peer} from {conn.local}\n")
        for i in range(config.count):
            last = i == config.count - 1
            conn.send_all(message if config.count == 1 else message + b"\n")
            # Over TLS there is no half-close; the server answers a raw
            # message and closes, so the exchange ends the same way.
            if last and config.ssl_context is None:
                conn.shutdown_write()
            reply = conn.receive_message(reply_codec)
            if reply is None:
                raise BrokenError(
                    f"{conn.peer} closed the connection without a reply"
                    + (f" (after {i} of {config.count})" if config.count > 1 else "")
                )
            out.write(f"Received: {show_message(reply)}\n")
            out.flush()
    return 0


def run_udp_client(
    config: ClientConfig, out: TextIO, err: TextIO | None = None, *, verbose: bool = False
) -> int:
    """Send the datagram (``count`` times), print each reply; retry on loss; return 0.

    Raises:
        MessageTooLargeError: the message cannot fit in one datagram.
        SocketTimeoutError: no reply after the retries.
    """
    message = UDP_MESSAGE if config.message is None else config.message
    with open_datagram_client(
        config.endpoint, family=config.family, timeout=config.timeout
    ) as dgram:
        if verbose and err is not None:
            err.write(f"sending from {dgram.local} to {dgram.peer}\n")
        for _ in range(config.count):
            reply = dgram.request(message, timeout=config.timeout, retries=config.retries)
            out.write(f"Received: {show_message(reply)}\n")
            out.flush()
    return 0
