"""asyncio I/O with the same API shape as ``socketkit.sync`` (``aclose`` for ``close``)."""

from ._connection import Connection, Server, connect, start_server

__all__ = ["Connection", "Server", "connect", "start_server"]
