"""A SOCKS4, SOCKS4a, SOCKS5 and HTTP proxy server on the server engine.

>>> from socketkit.proxy import ProxySettings, proxy_factory
>>> from socketkit.server import ServerConfig, ServerLog, run_stream_server
>>> factory = proxy_factory(ProxySettings())
>>> config = ServerConfig(service="proxy", protocol_factory=factory)   # doctest: +SKIP
>>> run_stream_server(config, ServerLog())                          # doctest: +SKIP

The client side (connecting through a proxy) is ``socketkit.proxy_client``.
"""

from ._policy import DestinationPolicy, DestinationRule, parse_destination_rule
from ._server import ProxyProtocol, proxy_factory
from ._settings import (
    DEFAULT_PROXY_CONNECT_TIMEOUT,
    DEFAULT_PROXY_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_PORT,
    Credentials,
    ProxySettings,
    check_credentials,
)

__all__ = [
    "DEFAULT_PROXY_CONNECT_TIMEOUT",
    "DEFAULT_PROXY_HANDSHAKE_TIMEOUT",
    "DEFAULT_PROXY_PORT",
    "Credentials",
    "DestinationPolicy",
    "DestinationRule",
    "ProxyProtocol",
    "ProxySettings",
    "check_credentials",
    "parse_destination_rule",
    "proxy_factory",
]
