"""Endpoints: parse, format and resolve the addresses socketkit talks to.

Grammar (one place for every command and the library)::

    8080                 a bare port; the host comes from the caller's default
    127.0.0.1:8080       IPv4 literal or host name, then a port
    [::1]:8080           IPv6 literal in brackets (RFC 3986 section 3.2.2)
    ::1                  an IPv6 literal alone, when a default port is given
    localhost            a host alone, when a default port is given
    unix:/tmp/sock       a Unix domain socket path ("unix:@name" is Linux's
                         abstract namespace)

Ports are checked here (0..65535, digits only) so that a bad port is an
``AddressError`` with a clear message before any socket exists. Ports and
addresses are carried in host form; the conversion to network byte order is
done by the socket module (``htons`` inside ``sockaddr``), never by hand.

Nothing here opens a socket; ``resolve`` is the only function that does I/O
(a getaddrinfo call).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass
from typing import Literal

from .errors import AddressError, HostNotFoundError, UnsupportedError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Endpoint",
    "InetEndpoint",
    "ResolvedAddress",
    "UnixEndpoint",
    "as_endpoint",
    "family_from_flags",
    "format_sockaddr",
    "has_unix_sockets",
    "parse_endpoint",
    "parse_port",
    "resolve",
]

#: The lecture's defaults: every original program talks to 127.0.0.1 port 8080.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080

Family = Literal[0, 2, 10] | int


@dataclass(frozen=True, slots=True)
class InetEndpoint:
    """An IPv4/IPv6 endpoint. ``host`` None means every local interface."""

    host: str | None
    port: int

    def __str__(self) -> str:
        host = self.host
        if host is None:
            return f"*:{self.port}"
        if ":" in host:
            return f"[{host}]:{self.port}"
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UnixEndpoint:
    """A Unix domain socket path (a leading "@" is Linux's abstract namespace)."""

    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"

    @property
    def sockaddr(self) -> str:
        """The address as the socket module takes it."""
        if self.path.startswith("@"):
            return "\0" + self.path[1:]
        return self.path


Endpoint = InetEndpoint | UnixEndpoint


@dataclass(frozen=True, slots=True)
class ResolvedAddress:
    """One getaddrinfo result, ready for ``socket()`` and ``connect()``/``bind()``."""

    family: int
    type: int
    proto: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int]

    def __str__(self) -> str:
        return format_sockaddr(self.sockaddr)


def has_unix_sockets() -> bool:
    """True when this platform has AF_UNIX (not on old Windows)."""
    return hasattr(socket, "AF_UNIX")


def parse_port(text: str | int, *, what: str = "port") -> int:
    """Parse a port number 0..65535 (0 asks the OS for a free one).

    Raises:
        AddressError: not digits, or outside 0..65535.
    """
    if isinstance(text, int):
        value = text
    else:
        stripped = text.strip()
        if not stripped.isdigit() or not stripped.isascii():
            raise AddressError(f"invalid {what} {text!r}: expected a number from 0 to 65535")
        value = int(stripped)
    if not 0 <= value <= 65535:
        raise AddressError(f"invalid {what} {value}: must be from 0 to 65535")
    return value


def _check_host(host: str, original: str) -> str:
    if not host:
        raise AddressError(f"invalid address {original!r}: empty host")
    if any(c.isspace() for c in host) or "/" in host or "[" in host or "]" in host:
        raise AddressError(f"invalid address {original!r}: malformed host {host!r}")
    if host == "unix":
        # "unix:PORT" would read back as a Unix socket path.
        raise AddressError(
            f"invalid address {original!r}: a host named 'unix' is ambiguous "
            "(write unix:/path for a Unix socket)"
        )
    return host


def _is_ipv6(host: str) -> bool:
    """True for an IPv6 literal, with an optional zone (``fe80::1%eth0``).

    A zone names an interface (RFC 4007 section 11): never empty, and never
    holding whitespace, "/" or brackets, which would also break the
    ``[ADDR]:PORT`` form the endpoint is written back in.
    """
    address, percent, zone = host.partition("%")
    if percent and (not zone or any(c.isspace() or c in "/[]" for c in zone)):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def parse_endpoint(
    text: str,
    *,
    default_host: str | None = DEFAULT_HOST,
    default_port: int | None = None,
) -> Endpoint:
    """Parse an endpoint written in the grammar of this module's docstring.

    Args:
        text: what the user wrote.
        default_host: host for a bare port (None: every interface, for servers).
        default_port: port for a bare host; None makes the port mandatory.

    Raises:
        AddressError: malformed text or bad port.
    """
    original = text
    text = text.strip()
    if not text:
        raise AddressError("invalid address '': empty")
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise AddressError(f"invalid address {original!r}: empty Unix socket path")
        return UnixEndpoint(path)
    if text.isdigit():
        return InetEndpoint(default_host, parse_port(text))
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise AddressError(f"invalid address {original!r}: missing ']' after IPv6 address")
        host = text[1:close]
        rest = text[close + 1 :]
        if not _is_ipv6(host):
            raise AddressError(f"invalid address {original!r}: {host!r} is not an IPv6 address")
        if not rest:
            if default_port is None:
                raise AddressError(f"invalid address {original!r}: missing ':PORT'")
            return InetEndpoint(host, default_port)
        if not rest.startswith(":"):
            raise AddressError(f"invalid address {original!r}: expected ':PORT' after ']'")
        return InetEndpoint(host, parse_port(rest[1:]))
    if text.count(":") > 1:
        # An unbracketed IPv6 literal: only valid alone, with a default port.
        if not _is_ipv6(text) or default_port is None:
            raise AddressError(
                f"invalid address {original!r}: write IPv6 with a port as [ADDR]:PORT"
            )
        return InetEndpoint(text, default_port)
    if ":" in text:
        host, _, port = text.rpartition(":")
        if not host or host == "*":
            return InetEndpoint(default_host if not host else None, parse_port(port))
        return InetEndpoint(_check_host(host, original), parse_port(port))
    if default_port is None:
        raise AddressError(f"invalid address {original!r}: missing ':PORT'")
    if text == "*":
        # "*" alone means every interface, as in "*:PORT"; kept as a host it
        # would format as "*:PORT" and so read back as a different endpoint.
        return InetEndpoint(None, default_port)
    return InetEndpoint(_check_host(text, original), default_port)


def as_endpoint(endpoint: Endpoint | str | int, *, default_host: str | None) -> Endpoint:
    """What a library call was given as its endpoint, as an ``Endpoint``.

    An endpoint is taken as it is, text is parsed (``parse_endpoint``), and a
    bare port number is that port on ``default_host`` (None: every interface).

    Raises:
        AddressError: malformed text or bad port.
    """
    if isinstance(endpoint, int):
        return InetEndpoint(default_host, parse_port(endpoint))
    if isinstance(endpoint, str):
        return parse_endpoint(endpoint, default_host=default_host)
    return endpoint


def family_from_flags(ipv4: bool = False, ipv6: bool = False) -> int:
    """The address family for "IPv4 only" / "IPv6 only" (AF_UNSPEC for neither).

    Raises:
        AddressError: both were asked for.
    """
    if ipv4 and ipv6:
        raise AddressError("IPv4 only and IPv6 only exclude each other: choose at most one")
    if ipv4:
        return socket.AF_INET
    if ipv6:
        return socket.AF_INET6
    return socket.AF_UNSPEC


def format_sockaddr(sockaddr: object) -> str:
    """Format what ``accept``/``recvfrom``/``getsockname`` return, for people.

    IPv4-mapped IPv6 addresses (``::ffff:127.0.0.1``, seen on a dual-stack
    listener) are shown as the IPv4 address they carry.
    """
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        host, port = str(sockaddr[0]), int(sockaddr[1])
        if host.startswith("::ffff:") and "." in host:
            host = host[len("::ffff:") :]
        if ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"
    if isinstance(sockaddr, bytes):
        sockaddr = sockaddr.decode("utf-8", "replace")
    if isinstance(sockaddr, str):
        if sockaddr.startswith("\0"):
            return f"unix:@{sockaddr[1:]}"
        return f"unix:{sockaddr}" if sockaddr else "unix:(unnamed)"
    return str(sockaddr)


def resolve(
    endpoint: InetEndpoint,
    *,
    family: int = socket.AF_UNSPEC,
    type: int = socket.SOCK_STREAM,
    passive: bool = False,
) -> list[ResolvedAddress]:
    """Resolve an endpoint with getaddrinfo.

    Args:
        endpoint: host (None with ``passive`` means every interface) and port.
        family: AF_UNSPEC, AF_INET or AF_INET6 (``-4``/``-6``).
        type: SOCK_STREAM or SOCK_DGRAM.
        passive: True for an address to bind (AI_PASSIVE).

    Returns:
        Addresses in the order getaddrinfo prefers, never empty.

    Raises:
        HostNotFoundError: the name does not resolve (in that family).
    """
    # No AI_ADDRCONFIG: on a machine with only loopback configured it hides
    # "localhost", which is exactly where tests and the lecture live.
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, family, type, 0, flags)
    except socket.gaierror as exc:
        fam = {int(socket.AF_INET): " as IPv4", int(socket.AF_INET6): " as IPv6"}.get(
            int(family), ""
        )
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            reason = "no such host"
        raise HostNotFoundError(
            f"cannot resolve host {endpoint.host!r}{fam}: {reason}", errno=exc.errno
        ) from exc
    except UnicodeError as exc:
        raise AddressError(f"invalid host name {endpoint.host!r}") from exc
    result = [
        ResolvedAddress(fam_, type_, proto, sa)  # type: ignore[arg-type]
        for fam_, type_, proto, _canon, sa in infos
        if fam_ in (socket.AF_INET, socket.AF_INET6)
    ]
    if not result:
        raise HostNotFoundError(f"cannot resolve host {endpoint.host!r}: no usable address")
    return result


def require_unix_sockets(what: str = "Unix domain sockets") -> None:
    """Raise ``UnsupportedError`` on platforms without AF_UNIX."""
    if not has_unix_sockets():
        raise UnsupportedError(f"{what} are not available on {sys.platform}")
