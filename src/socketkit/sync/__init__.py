"""Blocking I/O: connections, listeners and datagram sockets with timeouts.

>>> from socketkit import sync
>>> with sync.connect("127.0.0.1:8080") as conn:   # doctest: +SKIP
...     conn.send_all(b"Hello from client")
...     conn.shutdown_write()
...     reply = conn.receive_some()
"""

from ._connection import Connection, Listener, connect, open_listener
from ._datagram import (
    MAX_UDP_PAYLOAD,
    DatagramSocket,
    open_datagram_client,
    open_datagram_server,
)

__all__ = [
    "MAX_UDP_PAYLOAD",
    "Connection",
    "DatagramSocket",
    "Listener",
    "connect",
    "open_datagram_client",
    "open_datagram_server",
    "open_listener",
]
