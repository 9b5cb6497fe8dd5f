"""The relay's proxy client sides (``socks5:``, ``socks4a:``, ``http-connect:``, ``proxy:``).

The grammar (``_grammar``) keeps a proxy address as text and options;
``proxy_spec`` turns one into the library's ``proxy_client.Proxy``, and
``open_proxied`` opens the side: the handshake runs on the socket with the
loop's non-blocking calls (``_tunnel.aopen_proxy_socket``), then the
socket becomes a transport of the link like any TCP side, with the
target's first bytes (those that came with the proxy's reply) handed on
first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._tunnel import Proxy, aopen_proxy_socket
from ..errors import AddressError
from ..framing.tunnel import DnsPolicy, ProxyKind
from ..server import ServerLog
from ._grammar import PROXY_KINDS, RelayAddress
from ._link import Link, SideProtocol

__all__ = ["open_proxied", "proxy_spec"]

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


async def open_proxied(
    addr: RelayAddress,
    link: Link,
    index: int,
    log: ServerLog,
    family: int,
    timeout: float | None,
    counter: Any = None,
) -> None:
    """Open the proxy address ``addr`` and attach it to ``link`` as side ``index``.

    Raises:
        ProxyError: the proxy did not open the tunnel (naming the proxy).
        ConnectError, SocketTimeoutError, AddressError: reaching the proxy failed.
    """
    proxy = proxy_spec(addr)
    assert addr.target is not None
    sock, first = await aopen_proxy_socket(
        proxy, addr.target, family=family, connect_timeout=timeout
    )
    protocol = SideProtocol(link, index, counter=counter)
    try:
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: protocol, sock=sock
        )
    except BaseException:
        sock.close()
        raise
    name = f"{addr.target} via {proxy.kind.value} proxy {proxy.address}"
    log.event(f"connected to {name}", "connected", True, peer=str(addr.target))
    if first:
        protocol.data_received(first)  # held by the link until both sides are up
    link.attach(index, transport, transport, protocol)
