"""``socketkit tcp-server`` and ``socketkit udp-server``."""

from __future__ import annotations

import argparse

from ..access import AccessList
from ..errors import UsageError
from ..framing import CODECS, codec_by_name
from ..server import (
    SERVICES,
    Hello,
    Limits,
    ServerConfig,
    ServerLog,
    Service,
    run_datagram_server,
    run_stream_server,
)
from ._common import (
    Env,
    access_list,
    add_access_options,
    add_server_options,
    nonnegative_float,
    positive_float,
    positive_int,
    server_endpoint,
)
from ._tls import add_tls_arguments, context_from_args

__all__ = [
    "accept_filter",
    "add_engine_options",
    "add_parsers",
    "engine_limits",
    "server_log",
]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tcp = sub.add_parser(
        "tcp-server",
        help="the lecture's TCP server (default port 8080), on the concurrent engine",
        description="Serve TCP (or Unix stream) clients. Prints 'Server listening on port N' "
        "when ready, 'Client connected' and 'Received: <message>' per client.",
    )
    add_server_options(tcp, stream=True)
    add_access_options(tcp)
    _add_service_options(tcp, stream=True)
    add_tls_arguments(tcp, "server")
    tcp.set_defaults(run=run_tcp_server)

    udp = sub.add_parser(
        "udp-server",
        help="the lecture's UDP server (default port 8080)",
        description="Answer UDP (or Unix datagram) clients. Prints 'UDP server listening on "
        "port N' when ready and 'Received: <message>' per datagram.",
    )
    add_server_options(udp, stream=False)
    add_access_options(udp)
    _add_service_options(udp, stream=False)
    udp.set_defaults(run=run_udp_server)


def _add_service_options(parser: argparse.ArgumentParser, *, stream: bool) -> None:
    parser.add_argument(
        "--service", choices=list(SERVICES), default="hello", help="what to serve (default hello)"
    )
    if stream:
        parser.add_argument(
            "--frame",
            choices=list(CODECS),
            default=None,
            help="framing the service reads and writes (default: raw; hello: a line or what arrived)",
        )
        parser.add_argument(
            "--max-line",
            type=positive_int,
            default=None,
            metavar="N",
            help="largest line or frame accepted, in bytes",
        )
        add_engine_options(parser)
    else:
        parser.add_argument(
            "--max-size",
            type=positive_int,
            default=None,
            metavar="N",
            help="largest datagram accepted (default 65507)",
        )


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The stream engine's options: limits, timeouts, backlog, workers, PROXY protocol."""
    parser.add_argument(
        "--max-conns",
        type=positive_int,
        default=None,
        metavar="N",
        help="serve at most N clients at once (others wait)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=None,
        metavar="S",
        help="close a connection idle for S seconds",
    )
    parser.add_argument(
        "--drain-timeout",
        type=nonnegative_float,
        default=5.0,
        metavar="S",
        help="at shutdown, let exchanges finish for S seconds (default 5)",
    )
    parser.add_argument(
        "--backlog",
        type=positive_int,
        default=None,
        metavar="N",
        help="listen backlog (default: the system maximum; 5 with --once)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="N processes share the port (SO_REUSEPORT; Linux and FreeBSD)",
    )
    parser.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY protocol v1/v2 header (behind HAProxy and the like)",
    )


def engine_limits(args: argparse.Namespace) -> Limits:
    """The limits ``add_engine_options`` asked for."""
    return Limits(
        max_conns=args.max_conns, idle_timeout=args.idle_timeout, drain_timeout=args.drain_timeout
    )


def accept_filter(args: argparse.Namespace) -> AccessList | None:
    """--allow/--deny as the engine's accept_filter (None when neither is given)."""
    acl = access_list(args)
    return acl if acl.active else None


def server_log(args: argparse.Namespace, env: Env) -> ServerLog:
    """The server log the common options (-v, -q, --log-format) describe."""
    return ServerLog(
        env.stdout,
        env.stderr,
        verbose=args.verbose,
        json_format=args.log_format == "json",
        quiet=args.quiet,
    )


def _service(args: argparse.Namespace) -> Service:
    """The service ``--service`` names; ``--reply`` is the hello service's answer."""
    if args.service == Hello.name:
        return Hello(args.reply)
    return SERVICES[args.service]()


def run_tcp_server(args: argparse.Namespace, env: Env) -> int:
    endpoint, family = server_endpoint(args)
    if args.max_line is not None and args.frame is None and args.service not in ("hello",):
        raise UsageError("--max-line needs --frame line or --frame u32")
    if args.once and args.workers > 1:
        raise UsageError("--once serves one client: it cannot be combined with --workers")
    config = ServerConfig(
        endpoint=endpoint,
        family=family,
        service=_service(args),
        codec=codec_by_name(args.frame, args.max_line) if args.frame else None,
        once=args.once,
        backlog=args.backlog,
        workers=args.workers,
        proxy_protocol=args.proxy_protocol,
        limits=engine_limits(args),
        summary=args.verbose or not args.once,
        accept_filter=accept_filter(args),
        ssl_context=context_from_args(args, "server"),
    )
    run_stream_server(config, server_log(args, env))
    return 0


def run_udp_server(args: argparse.Namespace, env: Env) -> int:
    endpoint, family = server_endpoint(args)
    config = ServerConfig(
        endpoint=endpoint,
        family=family,
        service=_service(args),
        max_datagram_size=args.max_size,
        once=args.once,
        summary=args.verbose or not args.once,
        accept_filter=accept_filter(args),
    )
    run_datagram_server(config, server_log(args, env))
    return 0
