"""``socketkit tcp-client`` and ``socketkit udp-client``."""

from __future__ import annotations

import argparse

from ..address import InetEndpoint
from ..lecture import TCP_MESSAGE, UDP_MESSAGE, ClientConfig, run_tcp_client, run_udp_client
from ._common import Env, add_client_options, client_endpoint, nonnegative_int
from ._tls import add_tls_arguments, context_from_args, server_hostname_from_args

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tcp = sub.add_parser(
        "tcp-client",
        help="the lecture's TCP client (127.0.0.1:8080)",
        description="Send a message, print 'Received: <reply>'. One message goes without a "
        "newline, followed by a half-close; with --count, messages go as lines.",
    )
    add_client_options(tcp, stream=True, default_message=TCP_MESSAGE)
    add_tls_arguments(tcp, "client")
    tcp.set_defaults(run=run_tcp)

    udp = sub.add_parser(
        "udp-client",
        help="the lecture's UDP client (127.0.0.1:8080)",
        description="Send a datagram, print 'Received: <reply>'; resend on loss.",
    )
    add_client_options(udp, stream=False, default_message=UDP_MESSAGE)
    udp.add_argument(
        "--retries",
        type=nonnegative_int,
        default=2,
        help="resend this many times when no reply comes (default 2)",
    )
    udp.set_defaults(run=run_udp)


def _config(args: argparse.Namespace) -> ClientConfig:
    endpoint, family = client_endpoint(args)
    return ClientConfig(
        endpoint=endpoint,
        family=family,
        message=args.message,
        count=args.count,
        timeout=args.timeout,
        retries=getattr(args, "retries", 0),
        wait_for_server=getattr(args, "wait_for_server", 0.0),
    )


def run_tcp(args: argparse.Namespace, env: Env) -> int:
    config = _config(args)
    config.ssl_context = context_from_args(args, "client")
    if config.ssl_context is not None and isinstance(config.endpoint, InetEndpoint):
        config.server_hostname = server_hostname_from_args(args, config.endpoint.host or "")
    return run_tcp_client(config, env.stdout, env.stderr, verbose=args.verbose)


def run_udp(args: argparse.Namespace, env: Env) -> int:
    return run_udp_client(_config(args), env.stdout, env.stderr, verbose=args.verbose)
