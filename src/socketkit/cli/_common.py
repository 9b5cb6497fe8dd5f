"""Argument types and option groups shared by the commands.

Types raise ``argparse.ArgumentTypeError`` with our one-line messages, so
``-p 70000`` and ``-p abc`` read the same as a bad port in the library.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from dataclasses import dataclass
from typing import TextIO

from ..access import AccessList
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
    "is_ip_address",
    "message_bytes",
    "nonnegative_float",
    "nonnegative_int",
    "port_number",
    "positive_int",
    "server_endpoint",
    "split_host",
    "wait_seconds",
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


def wait_seconds(text: str) -> float | None:
    """A ``-w`` timeout: seconds, where 0 means no time limit (None), as in connect and relay.

    A zero timeout taken literally would make every blocking call fail at
    once (a TCP connect reports "operation now in progress"), so 0 means
    what netcat users mean by it: wait as long as the system does.
    """
    value = nonnegative_float(text)
    return None if value == 0 else value


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
    parser: argparse.ArgumentParser,
    host_default: str | None,
    host_help: str,
    *,
    client: bool,
    default_port: int = DEFAULT_PORT,
) -> None:
    if client:
        # The same positional HOST [PORT] as connect and bench client.
        parser.add_argument(
            "host_arg", metavar="HOST", nargs="?", help=f"{host_help}; same as --host"
        )
        parser.add_argument(
            "port_arg", metavar="PORT", nargs="?", type=port_number, help="same as -p"
        )
    parser.add_argument("--host", default=None if client else host_default, help=host_help)
    parser.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=None,  # DEFAULT_PORT unless the port comes with the host
        help=f"port (default {default_port})",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    family.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")


def add_server_options(parser: argparse.ArgumentParser, *, stream: bool) -> None:
    _add_address_options(
        parser,
        None,
        "address to bind, or HOST:PORT (default: every interface, dual-stack)",
        client=False,
    )
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


def add_wait_for_server(parser: argparse.ArgumentParser) -> None:
    """``--wait-for-server S``: the clients' connect retry for a server still starting."""
    parser.add_argument(
        "--wait-for-server",
        type=nonnegative_float,
        default=0.0,
        metavar="S",
        help="retry a refused connect for up to S seconds, for a server still "
        "starting (`server & client` on one line)",
    )


def add_client_options(
    parser: argparse.ArgumentParser, *, stream: bool, default_message: bytes
) -> None:
    _add_address_options(
        parser,
        DEFAULT_HOST,
        f"server host, HOST:PORT or [IPV6]:PORT (default {DEFAULT_HOST})",
        client=True,
    )
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
    if stream:
        add_wait_for_server(parser)
    parser.add_argument(
        "-w",
        "--timeout",
        type=wait_seconds,
        default=5.0,
        help="seconds to wait for each step (default 5; 0: no limit)",
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
    if not args.host:
        port = DEFAULT_PORT if args.port is None else args.port
        return InetEndpoint(None, port), _family(args)
    host, port_in_host = split_host(args.host)
    return InetEndpoint(host, _one_port(port_in_host, args.port)), _family(args)


def _one_port(*given: int | None) -> int:
    """The port given in one of several places (HOST:PORT, PORT, -p), or 8080.

    Raises:
        UsageError: given in more than one place.
    """
    ports = [p for p in given if p is not None]
    if len(ports) > 1:
        raise UsageError(
            "give the port once: as PORT, -p PORT or HOST:PORT, not "
            + " and ".join(str(p) for p in ports)
        )
    return ports[0] if ports else DEFAULT_PORT


def split_host(text: str) -> tuple[str, int | None]:
    """A host as a user types it, with or without a port: ``HOST``, ``HOST:PORT``,
    ``[V6]``, ``[V6]:PORT`` or a bare IPv6 address (``fe80::1``).

    ``::1:9000`` is both an IPv6 address and ``::1`` with port 9000: it is
    refused with the two ways of writing what was meant, never guessed.

    Raises:
        UsageError: empty, unbalanced brackets, ambiguous, or a bad port.
    """
    text = text.strip()
    if not text or text == "[]":
        raise UsageError("the host must not be empty")
    try:
        if text.startswith("["):
            host, close, rest = text[1:].partition("]")
            if not close or not host or (rest and not rest.startswith(":")):
                raise UsageError(f"invalid host {text!r}: expected [IPV6] or [IPV6]:PORT")
            return host, parse_port(rest[1:]) if rest else None
        if text.count(":") == 1:
            host, _, port = text.partition(":")
            if not host:
                raise UsageError(f"invalid host {text!r}: expected HOST:PORT")
            return host, parse_port(port)
        head, colon, tail = text.rpartition(":")
        if colon and tail.isdigit() and is_ip_address(head):
            raise UsageError(
                f"ambiguous host {text!r}: write [{head}]:{tail} for port {tail} "
                f"of {head}, or [{text}] for the address {text}"
            )
    except AddressError as exc:
        raise UsageError(str(exc)) from None
    return text, None


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def client_endpoint(args: argparse.Namespace) -> tuple[Endpoint, int]:
    """The endpoint a client talks to and the address family, from its options.

    The host comes from HOST or ``--host`` (one of them), the port from PORT,
    ``-p`` or the host's own ``:PORT`` (one of them); port 0 is refused,
    since no server listens there.
    """
    if args.host_arg is not None and args.host is not None:
        raise UsageError(f"give the host once: {args.host_arg!r} or --host {args.host!r}")
    host_text = args.host_arg if args.host_arg is not None else args.host
    if args.unix:
        require_unix_sockets()
        if args.ipv4 or args.ipv6 or host_text is not None or args.port_arg is not None:
            raise UsageError("--unix cannot be combined with HOST, PORT, --host, -4 or -6")
        return UnixEndpoint(args.unix), socket.AF_UNSPEC
    host, port_in_host = split_host(DEFAULT_HOST if host_text is None else host_text)
    port = _one_port(port_in_host, args.port_arg, args.port)
    if port == 0:
        raise UsageError("port 0: a client needs the server's port, from 1 to 65535")
    return InetEndpoint(host, port), _family(args)


def add_access_options(parser: argparse.ArgumentParser) -> None:
    """``--allow``/``--deny`` (repeatable) and ``--allowfile``/``--denyfile``."""
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="HOST[/BITS]",
        help="allow only these (addresses, CIDR ranges, host names)",
    )
    parser.add_argument(
        "--deny", action="append", default=[], metavar="HOST[/BITS]", help="refuse these"
    )
    parser.add_argument(
        "--allowfile",
        action="append",
        default=[],
        metavar="FILE",
        help="allow the hosts listed in FILE (one a line; # starts a comment)",
    )
    parser.add_argument(
        "--denyfile",
        action="append",
        default=[],
        metavar="FILE",
        help="refuse the hosts listed in FILE",
    )


def _access_entries(option: str, given: list[str], files: list[str]) -> list[str]:
    """The entries of ``--allow`` (or ``--deny``) and of the files of ``--allowfile``."""
    entries = list(given)
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise UsageError(f"{option}: cannot read {path}: {why}") from exc
        for line in lines:
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append(entry)
    return entries


def _resolved(entries: list[str], resolve: bool) -> list[str]:
    """Host names replaced by their addresses (as ncat does, once, at start-up)."""
    out: list[str] = []
    for entry in entries:
        host = entry.rsplit("/", 1)[0] if "/" in entry else entry
        if is_ip_address(host.strip("[]")) or host.startswith("["):
            out.append(entry)
            continue
        if not resolve:
            raise UsageError(f"-n: {entry!r} is a host name (numeric addresses only)")
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UsageError(f"cannot resolve {host!r} in --allow/--deny") from exc
        bits = entry[len(host) :]
        out.extend(f"{info[4][0]}{bits}" for info in infos)
    return out


def access_list(args: argparse.Namespace, *, resolve: bool = True) -> AccessList:
    """The access list ``--allow``/``--deny`` and their files describe (empty when none is given).

    Args:
        resolve: look host names up (False with ``-n``: names are refused).

    Raises:
        UsageError: a file that cannot be read, a name that does not resolve,
            an address or range that does not parse.
    """
    allow = _access_entries("--allowfile", args.allow, getattr(args, "allowfile", []))
    deny = _access_entries("--denyfile", args.deny, getattr(args, "denyfile", []))
    try:
        return AccessList.from_strings(
            _resolved(allow, resolve), _resolved(deny, resolve), names=("--allow", "--deny")
        )
    except AddressError as exc:
        raise UsageError(str(exc)) from exc
