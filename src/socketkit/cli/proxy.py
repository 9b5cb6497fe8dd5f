"""``socketkit proxy``: a SOCKS4, SOCKS4a, SOCKS5 and HTTP proxy on one port.

The protocol is told from each client's first byte. The command only parses
its options into ``socketkit.proxy.ProxySettings`` and a ``ServerConfig``;
the server engine does the rest (limits, idle timeout, drain, workers,
summary, JSON logs, TLS towards clients).

Safe by default: it binds 127.0.0.1 unless ``--host`` says otherwise, and
warns when it listens elsewhere without ``--auth``: a proxy anyone can reach
and use is an open relay.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from typing import Any

from ..address import InetEndpoint
from ..errors import AddressError, UsageError
from ..proxy import (
    DEFAULT_PROXY_CONNECT_TIMEOUT,
    DEFAULT_PROXY_HANDSHAKE_TIMEOUT,
    DEFAULT_PROXY_PORT,
    DestinationPolicy,
    ProxySettings,
    check_credentials,
    proxy_factory,
)
from ..relay import RelayAddress
from ..server import Limits, ProtocolService, ServerConfig, ServerLog, run_stream_server
from ._common import (
    Env,
    _add_address_options,
    add_access_options,
    add_common_options,
    positive_float,
    split_host,
)
from ._flags import family_from_flags
from ._tls import add_tls_arguments, context_from_args
from .servers import accept_filter, add_engine_options, engine_limits, server_log

__all__ = [
    "add_parsers",
    "credentials",
    "destination_policy",
    "open_relay_warning",
    "run_proxy_listener",
    "serve_proxy",
]

#: The address ``socketkit proxy`` binds unless told otherwise: loopback only.
DEFAULT_PROXY_HOST = "127.0.0.1"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "proxy",
        help=f"a SOCKS4/4a/5 and HTTP proxy on one port (default {DEFAULT_PROXY_HOST} "
        f"port {DEFAULT_PROXY_PORT})",
        description="Serve SOCKS4, SOCKS4a, SOCKS5 (RFC 1928) and HTTP proxy clients on one "
        "port, told apart by their first byte: CONNECT tunnels, and plain http:// requests "
        "forwarded. Prints 'Server listening on port N' when ready.",
    )
    add_proxy_options(parser)
    parser.set_defaults(run=run_proxy)


def add_proxy_options(parser: argparse.ArgumentParser) -> None:
    """Every option of ``socketkit proxy``."""
    _add_address_options(
        parser,
        DEFAULT_PROXY_HOST,
        f"address to bind, or HOST:PORT (default {DEFAULT_PROXY_HOST})",
        client=False,
        default_port=DEFAULT_PROXY_PORT,
    )
    parser.add_argument(
        "--auth",
        metavar="USER:PASS",
        help="require this user name and password (SOCKS5 RFC 1929, HTTP Basic); "
        "SOCKS4 clients are then refused",
    )
    parser.add_argument(
        "--allow-dest",
        action="append",
        default=[],
        metavar="RULE",
        help="only let clients reach these targets: CIDR, host name (.domain for its "
        "subdomains), :PORT or :LO-HI, or both (10.0.0.0/8:443); repeatable",
    )
    parser.add_argument(
        "--deny-dest",
        action="append",
        default=[],
        metavar="RULE",
        help="never let clients reach these targets (same forms); repeatable",
    )
    parser.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=DEFAULT_PROXY_CONNECT_TIMEOUT,
        metavar="S",
        help=f"seconds to connect to a target (default {DEFAULT_PROXY_CONNECT_TIMEOUT:g}); "
        "then SOCKS5 answers TTL expired, HTTP 504",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_float,
        default=DEFAULT_PROXY_HANDSHAKE_TIMEOUT,
        metavar="S",
        help="seconds a client has for its handshake, and a keep-alive HTTP client for its "
        f"next request (default {DEFAULT_PROXY_HANDSHAKE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--no-forward",
        action="store_true",
        help="serve CONNECT only: plain http:// requests get 405",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="text lines or JSON lines"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="don't print per-client lines")
    add_access_options(parser)
    add_engine_options(parser)
    add_tls_arguments(parser, "server")
    add_common_options(parser)


def credentials(text: str | None, what: str = "--auth") -> tuple[str, str] | None:
    """``USER:PASS`` split at the first colon (a password may contain colons).

    Raises:
        UsageError: no colon, or an empty user name.
    """
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise UsageError(f"{what} takes USER:PASS, got {text!r}")
    return user, password


def destination_policy(allow: list[str], deny: list[str]) -> DestinationPolicy:
    """The policy of ``--allow-dest``/``--deny-dest`` (one-line usage errors)."""
    try:
        return DestinationPolicy.from_strings(allow, deny, names=("--allow-dest", "--deny-dest"))
    except AddressError as exc:
        raise UsageError(str(exc)) from exc


def open_relay_warning(host: str | None, auth: bool) -> str | None:
    """The warning for a proxy bound beyond loopback without credentials, or None."""
    if auth:
        return None
    try:
        loopback = host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    where = host or "every interface"
    return (
        f"proxy listening on {where} without --auth: anyone who can reach it can use it "
        "(restrict with --auth, --allow or --allow-dest)"
    )


def serve_proxy(
    endpoint: InetEndpoint, settings: ProxySettings, log: ServerLog, **engine: Any
) -> int:
    """Serve the proxy at ``endpoint`` until a signal: ``socketkit proxy`` and
    ``socketkit relay proxy-listen:...`` both end here.

    Args:
        engine: the remaining ``ServerConfig`` fields (limits, workers, ...).
    """
    config = ServerConfig(
        endpoint=endpoint, service=ProtocolService(proxy_factory(settings)), **engine
    )
    warning = open_relay_warning(endpoint.host, settings.authenticate is not None)
    if warning is not None:
        log.warning(warning)
    run_stream_server(config, log)
    return 0


def _endpoint(args: argparse.Namespace) -> InetEndpoint:
    """Where ``socketkit proxy`` listens: ``--host`` (maybe HOST:PORT) and ``-p``, or 1080."""
    host, port_in_host = split_host(args.host)
    if port_in_host is not None and args.port is not None:
        raise UsageError("give the port once: as -p PORT or --host HOST:PORT")
    port = port_in_host if port_in_host is not None else args.port
    return InetEndpoint(host or None, DEFAULT_PROXY_PORT if port is None else port)


def run_proxy(args: argparse.Namespace, env: Env) -> int:
    endpoint = _endpoint(args)
    family = family_from_flags(args.ipv4, args.ipv6)
    pair = credentials(args.auth)
    settings = ProxySettings(
        authenticate=check_credentials(*pair) if pair else None,
        policy=destination_policy(args.allow_dest, args.deny_dest),
        connect_timeout=args.connect_timeout,
        handshake_timeout=args.request_timeout,
        forward=not args.no_forward,
    )
    return serve_proxy(
        endpoint,
        settings,
        server_log(args, env),
        family=family,
        backlog=args.backlog,
        workers=args.workers,
        proxy_protocol=args.proxy_protocol,
        limits=engine_limits(args),
        accept_filter=accept_filter(args),
        ssl_context=context_from_args(args, "server"),
    )


def run_proxy_listener(addr: RelayAddress, args: argparse.Namespace, env: Env) -> int:
    """``socketkit relay proxy-listen:[HOST:]PORT[,auth=,allow-dest=,deny-dest=]``.

    The same server as ``socketkit proxy``, with the relay's engine options.

    Raises:
        UsageError: another kind of address alone, or TLS options.
    """
    if addr.kind != "proxy-listen":
        raise UsageError("relay needs two addresses (A B); only proxy-listen: stands alone")
    if args.cert or args.ca_file or args.insecure or args.self_signed:
        raise UsageError("proxy-listen: takes no TLS options")
    endpoint = addr.endpoint
    assert isinstance(endpoint, InetEndpoint)
    pair = credentials(addr.get("auth"), "auth=")
    settings = ProxySettings(
        authenticate=check_credentials(*pair) if pair else None,
        policy=destination_policy(addr.get_all("allow-dest"), addr.get_all("deny-dest")),
        connect_timeout=args.wait or DEFAULT_PROXY_CONNECT_TIMEOUT,
    )
    log = ServerLog(
        env.stderr, env.stderr, verbose=args.verbose, json_format=args.log_format == "json"
    )
    return serve_proxy(
        endpoint,
        settings,
        log,
        family=socket.AF_INET6 if addr.has("6") else socket.AF_INET if addr.has("4") else 0,
        backlog=args.backlog or (int(addr.get("backlog") or 0) or None),
        workers=args.workers,
        proxy_protocol=args.proxy_protocol,
        limits=Limits(
            max_conns=args.max_conns,
            idle_timeout=args.idle_timeout,
            drain_timeout=args.drain_timeout,
        ),
        accept_filter=accept_filter(args),
    )
