"""asyncio I/O with the same API shape as ``socketkit.sync`` (``aclose`` for ``close``)."""

from ._connection import Connection, Handler, Server, connect, start_server

__all__ = ["Connection", "Handler", "Server", "connect", "start_server"]
