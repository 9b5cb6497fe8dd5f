"""socketkit: socket programming without the pitfalls.

The library: endpoints (``socketkit.address``), sans-I/O framing codecs
(``socketkit.framing``), blocking and asyncio connections (``socketkit.sync``,
``socketkit.aio``), one error tree (``socketkit.errors``), access control
(``socketkit.access``), TLS contexts (``socketkit.tls``), proxy tunnels
(``socketkit.proxy_client``), the server engine (``socketkit.server``), the
relay (``socketkit.relay``) and the benchmark (``socketkit.bench``).
docs/library.md shows it at work; ``socketkit.cli`` is the command line on top.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from . import errors
from .address import Endpoint, InetEndpoint, UnixEndpoint, parse_endpoint, parse_port, resolve
from .errors import SocketkitError

try:
    #: The installed distribution's version: written once, in pyproject.toml.
    __version__ = _version("socketkit")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

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
