"""The bench protocol on the wire: a control connection, data streams, UDP datagrams.

Every TCP connection to ``socketkit bench server`` starts with four bytes:
- ``SKBC``: control. The client sends one JSON line (the test's parameters,
  with a random ``cookie``); the server answers one JSON line
  (``{"ok": true, "udp_port": N}`` or ``{"error": "..."}``). When its side is
  done the client sends ``{"done": true, ...}`` and the server answers with
  its measurements (what it received and sent), then both close.
- ``SKBD``: a data stream, followed by the 16-byte cookie, the stream number
  (u32, network byte order) and its direction (1 byte: ``f`` the client
  sends, ``r`` the server sends).
- anything else: an echo connection (latency mode), so the latency test also
  runs against any echo server (``socketkit tcp-server --service echo``).

UDP datagrams carry a 24-byte header in network byte order: ``SKBU``, stream
number (u32), sequence number (u64, from 1), send time (i64 nanoseconds on
the sender's monotonic clock; only differences matter, as in RFC 3550).
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

__all__ = [
    "CONTROL",
    "DATA",
    "UDP_HEADER",
    "UDP_MAGIC",
    "read_json_line",
    "write_json_line",
]

CONTROL = b"SKBC"
DATA = b"SKBD"
UDP_MAGIC = b"SKBU"
#: magic, stream, sequence, send time in ns.
UDP_HEADER = struct.Struct("!4sIQq")
#: cookie (16 bytes), stream (u32), direction (1 byte).
DATA_HEADER = struct.Struct("!16sIc")
#: The longest control line accepted (the parameters are a few hundred bytes).
MAX_CONTROL_LINE = 1 << 20


def write_json_line(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")


def read_json_line(sock: socket.socket, buffer: bytearray) -> dict[str, Any] | None:
    """Read one JSON line (None at end of stream); ``buffer`` keeps what follows."""
    while b"\n" not in buffer:
        if len(buffer) > MAX_CONTROL_LINE:
            raise ValueError("control line too long")
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("control line is not a JSON object")
    return value


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the peer closed during the header")
        data += chunk
    return data
