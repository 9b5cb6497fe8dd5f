"""The proxy client options of ``connect`` and ``nc``: ncat's and OpenBSD nc's spellings.

ncat: ``--proxy HOST:PORT``, ``--proxy-type socks4|socks5|http`` (default
http, as ncat), ``--proxy-auth USER:PASS``, ``--proxy-dns
local|remote|both|none`` (default remote: the proxy resolves the target's
name, as ncat does). OpenBSD nc: ``-X 4|5|connect`` with ``-x HOST:PORT``
(default SOCKS5 when only ``-x`` is given); our ``-x`` alone is the hex dump
to standard error, so ``nc`` reads a ``-x`` followed by a HOST:PORT as the
proxy (``proxy_from_openbsd_args``).

The options become a relay address of a proxy kind (``socks5:``, ...) whose
target is what the user asked to connect to, so the data path is the
relay's, as for ``socketkit relay - socks5:P:1080:H:80``.
"""

from __future__ import annotations

import argparse
import re

from ..address import InetEndpoint, UnixEndpoint, parse_endpoint, parse_port
from ..errors import AddressError, UsageError
from ..relay import RelayAddress

__all__ = ["add_proxy_client_options", "proxied_address", "proxy_from_openbsd_args"]

#: ``--proxy-type``/``-X`` -> the relay kind.
_KINDS = {"socks4": "socks4", "4": "socks4", "socks5": "socks5", "5": "socks5"}
_KINDS |= {"http": "http-connect", "connect": "http-connect"}
#: ncat's default proxy port per type (``--proxy HOST`` without a port).
_DEFAULT_PORTS = {"socks4": 1080, "socks5": 1080, "http-connect": 3128}
#: A HOST:PORT as OpenBSD nc's ``-x`` takes it (``[v6]:PORT`` for IPv6).
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):\d{1,5}")


def add_proxy_client_options(parser: argparse.ArgumentParser) -> None:
    """``--proxy``, ``--proxy-type``, ``--proxy-auth``, ``--proxy-dns`` and ``-X``."""
    group = parser.add_argument_group("through a proxy")
    group.add_argument(
        "--proxy", metavar="HOST[:PORT]", help="connect through this SOCKS or HTTP proxy"
    )
    group.add_argument(
        "--proxy-type",
        choices=["socks4", "socks5", "http"],
        help="the proxy's protocol (default http, as ncat; with -x: socks5)",
    )
    group.add_argument(
        "-X",
        dest="proxy_openbsd",
        choices=["4", "5", "connect"],
        help="OpenBSD nc: the protocol of the -x proxy (4, 5 or connect)",
    )
    group.add_argument(
        "--proxy-auth",
        metavar="USER:PASS",
        help="credentials for the proxy (SOCKS5 RFC 1929, HTTP Basic or Digest; SOCKS4: USER only)",
    )
    group.add_argument(
        "--proxy-dns",
        choices=["local", "remote", "both", "none"],
        default="remote",
        help="where the target's name is resolved: here, at the proxy (default), here "
        "then at the proxy, or nowhere",
    )


def proxy_from_openbsd_args(args: argparse.Namespace, where: list[str]) -> list[str]:
    """OpenBSD nc's ``-x HOST:PORT``: take the proxy out of ``where``; return the rest.

    Our ``-x`` is a flag (hex dump to stderr), so ``nc -x proxy:1080 host 80``
    parses with ``proxy:1080`` among the positionals. With ``-X``, or three
    positionals of which one is a HOST:PORT, that one is the proxy and
    ``-x`` asked for nothing else.
    """
    if getattr(args, "listen", False) and (args.proxy is not None or args.proxy_openbsd):
        raise UsageError("--proxy and -X are for connecting, not with -l")
    if not args.hex_stderr or args.proxy is not None:
        return where
    candidates = [w for w in where if _HOST_PORT.fullmatch(w)]
    if not candidates or (args.proxy_openbsd is None and len(where) != 3):
        return where
    args.proxy = candidates[0]
    args.hex_stderr = False
    rest = list(where)
    rest.remove(candidates[0])
    return rest


def proxied_address(args: argparse.Namespace, host: str, port: str | None) -> RelayAddress | None:
    """The relay address reaching ``host`` ``port`` through ``--proxy``, or None without one.

    Raises:
        UsageError: proxy options without ``--proxy``, a malformed proxy
            address, or a transport a tunnel cannot carry.
        AddressError: a bad port.
    """
    proxy_type = args.proxy_type or {"4": "socks4", "5": "socks5", "connect": "http"}.get(
        args.proxy_openbsd or ""
    )
    if args.proxy is None:
        if args.proxy_type or args.proxy_openbsd or args.proxy_auth:
            raise UsageError("--proxy-type, -X and --proxy-auth need --proxy (or -x)")
        return None
    if args.udp or args.unixsock or args.tls:
        raise UsageError("--proxy tunnels TCP: it cannot be combined with -u, -U or --tls")
    if port is None:
        raise UsageError("connect needs HOST and PORT (see --help)")
    target = InetEndpoint(host[1:-1] if host.startswith("[") else host, parse_port(port))
    if proxy_type is None:
        proxy_type = "socks5" if args.proxy_openbsd is not None else "http"
    kind = _KINDS[proxy_type]
    try:
        endpoint = parse_endpoint(args.proxy, default_host=None, default_port=_DEFAULT_PORTS[kind])
    except AddressError as exc:
        raise UsageError(f"--proxy: {exc}") from exc
    if isinstance(endpoint, UnixEndpoint) or endpoint.host is None:
        raise UsageError(f"--proxy takes HOST[:PORT], got {args.proxy!r}")
    options: list[tuple[str, str | None]] = [("dns", args.proxy_dns)]
    if args.proxy_auth is not None:
        if kind == "socks4":
            options.append(("socksuser", args.proxy_auth.partition(":")[0]))
        elif ":" not in args.proxy_auth:
            raise UsageError(f"--proxy-auth takes USER:PASS, got {args.proxy_auth!r}")
        else:
            options.append(("auth", args.proxy_auth))
    return RelayAddress(
        kind,
        endpoint,
        options=tuple(options),
        text=f"{kind}:{endpoint}:{target}",
        target=target,
    )
