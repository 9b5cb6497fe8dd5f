"""socketkit: socket programming without the pitfalls.

The library: endpoints (``socketkit.address``), sans-I/O framing codecs
(``socketkit.framing``), blocking and asyncio connections (``socketkit.sync``,
``socketkit.aio``), one error tree (``socketkit.errors``), access control
(``socketkit.access``), TLS contexts (``socketkit.tls``), proxy tunnels
(``socketkit.proxy_client``), the server engine (``socketkit.server``), the
relay (``socketkit.relay``) and the benchmark (``socketkit.bench``).
docs/library.md shows it at work; ``socketkit.cli`` is the command line on top.
"""

from . import errors
from .errors import SocketkitError

# Not ``typing.TYPE_CHECKING``: importing typing alone costs milliseconds of
# start-up; mypy reads any constant of that name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .address import (
        Endpoint,
        InetEndpoint,
        UnixEndpoint,
        parse_endpoint,
        parse_port,
        resolve,
    )

    __version__: str

#: Loaded on first use, so that starting the ``socketkit`` command imports
#: next to nothing before it can handle Ctrl-C (see ``socketkit.__main__``).
_FROM_ADDRESS = {
    "Endpoint",
    "InetEndpoint",
    "UnixEndpoint",
    "parse_endpoint",
    "parse_port",
    "resolve",
}


def __getattr__(name: str) -> object:
    if name in _FROM_ADDRESS:
        from . import address

        return getattr(address, name)
    if name == "__version__":
        # The installed distribution's version: written once, in
        # pyproject.toml. importlib.metadata is read on first use only.
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("socketkit")
        except PackageNotFoundError:  # pragma: no cover - a source tree never installed
            return "0+unknown"
    raise AttributeError(f"module 'socketkit' has no attribute {name!r}")


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
