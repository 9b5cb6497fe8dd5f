"""The relay's proxy client addresses (``socks5:``, ``socks4a:``, ``http-connect:``...) as ``Proxy``.

The grammar (``_grammar``) keeps a proxy address as text and options; this
turns one into the library's ``proxy_client.Proxy``, which the opener
hands to ``proxy_client.aopen_proxy_socket``.
"""

from __future__ import annotations

from ..errors import AddressError
from ..framing.tunnel import DnsPolicy, ProxyKind
from ..proxy_client import Proxy
from ._grammar import PROXY_KINDS, RelayAddress

__all__ = ["proxy_spec"]

_PROTOCOLS = {"socks4": ProxyKind.SOCKS4, "socks5": ProxyKind.SOCKS5, "http": ProxyKind.HTTP}


def proxy_spec(addr: RelayAddress) -> Proxy:
    """The proxy a proxy client address goes through (its ``endpoint``).

    Raises:
        AddressError: ``addr`` is not a proxy client address.
    """
    if addr.kind not in PROXY_KINDS or addr.endpoint is None:
        raise AddressError(f"{addr} is not a proxy address")
    protocol, default_dns, _port = PROXY_KINDS[addr.kind]
    kind = _PROTOCOLS[protocol]
    dns: DnsPolicy = "local" if addr.has("resolve") else default_dns  # type: ignore[assignment]
    chosen = addr.get("dns")
    if chosen is not None:
        dns = chosen  # type: ignore[assignment]  # checked by the grammar
    username: str | None = None
    password: str | None = None
    credentials = addr.get("auth") or addr.get("proxyauth")
    if credentials is not None:
        username, _, password = credentials.partition(":")
    if kind is ProxyKind.SOCKS4:
        # SOCKS4 carries a user id and no password.
        username, password = addr.get("socksuser") or username, None
    return Proxy(addr.endpoint, kind, username=username, password=password, dns=dns)
