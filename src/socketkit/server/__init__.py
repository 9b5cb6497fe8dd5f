"""The server engine: services, limits, graceful shutdown, on asyncio (uvloop if present).

>>> from socketkit.server import ServerConfig, ServerLog, run_stream_server
>>> run_stream_server(ServerConfig(service="echo"), ServerLog())   # doctest: +SKIP
"""

from ._engine import DatagramEngine, Limits, StreamEngine
from ._handler import Handler
from ._log import ServerLog, Stats
from ._loop import loop_name, run
from ._run import ServerConfig, run_datagram_server, run_stream_server
from ._services import SERVICES, ConnectionProtocol, Service

__all__ = [
    "SERVICES",
    "ConnectionProtocol",
    "DatagramEngine",
    "Handler",
    "Limits",
    "ServerConfig",
    "ServerLog",
    "Service",
    "Stats",
    "StreamEngine",
    "loop_name",
    "run",
    "run_datagram_server",
    "run_stream_server",
]
