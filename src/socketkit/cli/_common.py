"""Argument types and option groups shared by the commands.

Types raise ``argparse.ArgumentTypeError`` with our one-line messages, so
``-p 70000`` and ``-p abc`` read the same as a bad port in the library.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass
from typing import TextIO

from ..address import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Endpoint,
    InetEndpoint,
    UnixEndpoint,
    parse_port,
    require_unix_sockets,
)
from ..errors import AddressError, UsageError
from ..relay import AccessList
from ._flags import family_from_flags

__all__ = [
    "Env",
    "access_list",
    "add_access_options",
    "add_client_options",
    "add_common_options",
    "add_server_options",
    "add_trace_option",
    "client_endpoint",
    "message_bytes",
    "nonnegative_float",
    "port_number",
    "positive_int",
    "server_endpoint",
]


@dataclass(slots=True)
class Env:
    """The streams a command writes to (injected by tests)."""

    stdout: TextIO
    stderr: TextIO


def port_number(text: str) -> int:
    try:
        return parse_port(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    return _whole_number(text, 0)


def nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number of seconds above 0, got 0")
    return value


def message_bytes(text: str) -> bytes:
    """Command-line text as bytes (UTF-8, undecodable bytes kept as they were)."""
    return text.encode("utf-8", "surrogateescape")


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="say more on standard error")
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )


def add_trace_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--trace`` (print every socket call on standard error) unless present."""
    if "--trace" in parser._option_string_actions:
        return
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each socket system call (socket, bind, send, recv...) on standard error",
    )


def _add_address_options(
    parser: argparse.ArgumentParser, host_default: str | None, host_help: str
) -> None:
    parser.add_argument("--host", default=host_default, help=host_help)
    parser.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT})",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    family.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")


def add_server_options(parser: argparse.ArgumentParser, *, stream: bool) -> None:
    _add_address_options(parser, None, "address to bind (default: every interface, dual-stack)")
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help=f"a Unix {'stream' if stream else 'datagram'} socket at PATH instead of TCP/UDP"
        if stream
        else "a Unix datagram socket at PATH instead of UDP",
    )
    parser.add_argument("--reply", type=message_bytes, help="the hello service's answer")
    parser.add_argument(
        "--once",
        action="store_true",
        help="stop after one client" if stream else "stop after one datagram",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="text lines or JSON lines"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="don't print per-client lines")
    add_common_options(parser)


def add_client_options(
    parser: argparse.ArgumentParser, *, stream: bool, default_message: bytes
) -> None:
    _add_address_options(parser, DEFAULT_HOST, f"server host (default {DEFAULT_HOST})")
    parser.add_argument(
        "--unix",
        metavar="PATH",
        help="connect to a Unix stream socket" if stream else "send to a Unix datagram socket",
    )
    parser.add_argument(
        "-m",
        "--message",
        type=message_bytes,
        default=None,
        help=f"what to send (default {default_message.decode()!r})",
    )
    parser.add_argument(
        "--count", type=positive_int, default=1, help="send N messages, print N replies"
    )
    parser.add_argument(
        "-w", "--timeout", type=nonnegative_float, default=5.0, help="seconds to wait (default 5)"
    )
    add_common_options(parser)


def _family(args: argparse.Namespace) -> int:
    return family_from_flags(args.ipv4, args.ipv6)


def server_endpoint(args: argparse.Namespace) -> tuple[Endpoint, int]:
    """The endpoint a server binds and the address family, from its options."""
    if args.unix:
        require_unix_sockets()
        if args.ipv4 or args.ipv6 or args.host:
            raise UsageError("--unix cannot be combined with --host, -4 or -6")
        return UnixEndpoint(args.unix), socket.AF_UNSPEC
    return InetEndpoint(args.host or None, args.port), _family(args)


def client_endpoint(args: argparse.Namespace) -> tuple[Endpoint, int]:
    """The endpoint a client talks to and the address family, from its options."""
    if args.unix:
        require_unix_sockets()
        if args.ipv4 or args.ipv6:
            raise UsageError("--unix cannot be combined with -4 or -6")
        return UnixEndpoint(args.unix), socket.AF_UNSPEC
    host = args.host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UsageError("--host must not be empty")
    return InetEndpoint(host, args.port), _family(args)


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """``--allow`` and ``--deny``: addresses and CIDR ranges, repeatable."""
    parser.add_argument(
        "--allow", action="append", default=[], metavar="ADDR[/BITS]", help="allow only these"
    )
    parser.add_argument(
        "--deny", action="append", default=[], metavar="ADDR[/BITS]", help="refuse these"
    )


def access_list(args: argparse.Namespace) -> AccessList:
    """The access list ``--allow``/``--deny`` describe (empty when neither is given).

    Raises:
        UsageError: an address or range that does not parse.
    """
    try:
        return AccessList.from_strings(args.allow, args.deny)
    except AddressError as exc:
        raise UsageError(str(exc)) from exc
