"""The TLS options of the commands: ``--tls`` and its companions, as ``TLSSettings``.

``add_tls_arguments(parser, role)`` adds the options (ncat's ``--ssl`` names
too), ``settings_from_args`` reads them back as the library's
``TLSSettings``, ``context_from_args(args, role)`` builds the context (None
without ``--tls``), ``server_hostname_from_args(args, host)`` gives the name
for SNI and the hostname check. The library (``socketkit.tls``) takes
``TLSSettings`` and imports no argparse.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import Literal, TextIO

from ..errors import UsageError
from ..tls import Role, TLSSettings, client_context, server_context

__all__ = [
    "add_tls_arguments",
    "client_context_warned",
    "context_from_args",
    "server_hostname_from_args",
    "settings_from_args",
]


def add_tls_arguments(parser: argparse.ArgumentParser, role: Role | Literal["both"]) -> None:
    """Add --tls and its options to a command's parser (ncat's --ssl names too)."""
    group = parser.add_argument_group("TLS")
    group.add_argument("--tls", "--ssl", action="store_true", help="speak TLS on the connection")
    group.add_argument(
        "--cert",
        "--ssl-cert",
        metavar="FILE",
        help="certificate (PEM) to present; a server needs one (or --self-signed)",
    )
    group.add_argument(
        "--key", "--ssl-key", metavar="FILE", help="private key (PEM), if not in --cert"
    )
    group.add_argument(
        "--ca-file",
        "--ssl-trustfile",
        metavar="FILE",
        help="CA certificates to trust (client: instead of the system's; "
        "server: require client certificates signed by them)",
    )
    group.add_argument(
        "--alpn",
        "--ssl-alpn",
        metavar="P1,P2",
        help="ALPN protocols to offer or accept, comma-separated (e.g. h2,http/1.1)",
    )
    if role in ("client", "both"):
        group.add_argument(
            "--insecure",
            action="store_true",
            dest="insecure",
            help="client: do not verify the server's certificate or name (says so on stderr)",
        )
        group.add_argument(
            "--sni",
            "--ssl-servername",
            metavar="NAME",
            help="client: server name to send (SNI) and to check (default: the host)",
        )
    if role in ("server", "both"):
        group.add_argument(
            "--self-signed",
            action="store_true",
            help="server: generate a throw-away self-signed certificate",
        )


def settings_from_args(args: argparse.Namespace) -> TLSSettings:
    """The TLS settings the options of ``add_tls_arguments`` describe."""
    alpn = tuple(p.strip() for p in (args.alpn or "").split(",") if p.strip())
    return TLSSettings(
        certfile=args.cert,
        keyfile=args.key,
        cafile=args.ca_file,
        verify=not getattr(args, "insecure", False),
        server_name=getattr(args, "sni", None),
        alpn=alpn,
        self_signed=getattr(args, "self_signed", False),
    )


def context_from_args(args: argparse.Namespace, role: Role) -> ssl.SSLContext | None:
    """The SSL context for ``role``, or None when ``--tls`` was not given.

    Raises:
        UsageError: TLS options without ``--tls``, or unusable files.
    """
    if not args.tls:
        extra = [
            flag
            for flag, value in (
                ("--cert", args.cert),
                ("--key", args.key),
                ("--ca-file", args.ca_file),
                ("--alpn", args.alpn),
                ("--insecure", getattr(args, "insecure", False)),
                ("--sni", getattr(args, "sni", None)),
                ("--self-signed", getattr(args, "self_signed", False)),
            )
            if value
        ]
        if extra:
            raise UsageError(f"{extra[0]} needs --tls")
        return None
    settings = settings_from_args(args)
    return client_context_warned(settings) if role == "client" else server_context(settings)


def client_context_warned(settings: TLSSettings, stderr: TextIO | None = None) -> ssl.SSLContext:
    """The library's client context, saying on ``stderr`` when ``--insecure`` turned
    verification off (the library leaves that to its caller)."""
    ctx = client_context(settings)
    if not settings.verify:
        stream = stderr if stderr is not None else sys.stderr
        stream.write(
            "socketkit: warning: TLS certificate verification is off (--insecure): "
            "anyone on the path can read and change this connection\n"
        )
        stream.flush()
    return ctx


def server_hostname_from_args(args: argparse.Namespace, host: str) -> str:
    """The name a client sends as SNI and checks the certificate against."""
    sni: str | None = getattr(args, "sni", None)
    return sni or host
