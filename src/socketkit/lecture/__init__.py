"""The lecture's four programs and the demo, on the socketkit library.

The servers are the engine's ``hello`` service (``socketkit.server``); the
clients and the demo live here.
"""

from ._clients import (
    TCP_MESSAGE,
    UDP_MESSAGE,
    ClientConfig,
    run_tcp_client,
    run_udp_client,
)
from ._demo import run_demo

__all__ = [
    "TCP_MESSAGE",
    "UDP_MESSAGE",
    "ClientConfig",
    "run_demo",
    "run_tcp_client",
    "run_udp_client",
]
