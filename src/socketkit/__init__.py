"""socketkit: socket programming without the pitfalls.

The library: endpoints (``socketkit.address``), sans-I/O framing codecs
(``socketkit.framing``), blocking and asyncio connections (``socketkit.sync``,
``socketkit.aio``), one error tree (``socketkit.errors``), and the server
engine (``socketkit.server``).
"""

from . import errors
from .address import Endpoint, InetEndpoint, UnixEndpoint, parse_endpoint, parse_port, resolve
from .errors import SocketkitError

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "InetEndpoint",
    "SocketkitError",
    "UnixEndpoint",
    "__version__",
    "errors",
    "parse_endpoint",
    "parse_port",
    "resolve",
]
