"""The server engine: services, limits, graceful shutdown, on asyncio (uvloop if present).

A server is a ``ServerConfig`` (where, which ``Service``, limits, TLS) run by
``run_stream_server`` or ``run_datagram_server``; the engines underneath
(``StreamEngine``, ``DatagramEngine``) serve any bound sockets handed to
them. The built-in services are in ``SERVICES`` by name; one's own coroutine
per connection is a ``HandlerService``; a service with a protocol of its own
subclasses ``Service`` and returns a ``ProtocolFactory`` (a
``ConnectionProtocol`` subclass, given the ``ConnectionHost`` that runs it)::

    from socketkit.server import Echo, ServerConfig, ServerLog, run_stream_server

    run_stream_server(ServerConfig(service=Echo()), ServerLog())
"""

from ._engine import ConnectionHost, DatagramEngine, Limits, StreamEngine
from ._handler import Handler, HandlerService
from ._log import ServerLog, Stats
from ._loop import loop_name, run
from ._run import ServerConfig, run_datagram_server, run_stream_server
from ._services import (
    SERVICES,
    Chargen,
    ConnectionProtocol,
    Daytime,
    Discard,
    Echo,
    Hello,
    ProtocolFactory,
    ProtocolService,
    Service,
)

__all__ = [
    "SERVICES",
    "Chargen",
    "ConnectionHost",
    "ConnectionProtocol",
    "DatagramEngine",
    "Daytime",
    "Discard",
    "Echo",
    "Handler",
    "HandlerService",
    "Hello",
    "Limits",
    "ProtocolFactory",
    "ProtocolService",
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
