"""What the proxy handshakes share: targets, events, failure kinds, detection.

A proxy handshake (SOCKS4, SOCKS4a, SOCKS5, HTTP CONNECT) is a short
exchange at the start of a connection; when it succeeds the connection
becomes a tunnel to the target and every later byte belongs to the
application. The machines in ``socketkit.framing.socks`` and
``socketkit.framing.http_proxy`` are sans-I/O, after h11's ``Connection``:

- ``receive_data(data)`` feeds bytes from the peer (``b""`` is end of stream);
- ``next_event()`` answers ``NEED_DATA`` until a whole message has arrived,
  then one event;
- ``data_to_send()`` hands out the bytes the machine wants sent, in order.

Client machines end in ``TunnelOpen``, whose ``trailing_data`` holds bytes
that arrived after the proxy's reply (they are the tunnel's first bytes), or
raise a ``ProxyError`` subclass. Server machines emit ``TunnelRequest`` and
the caller answers with ``accept`` or ``refuse(failure)``; a client the
server turns away for policy or an unsupported request is a ``Rejected``
event, and bytes that break the protocol raise ``ProxyRequestError`` (a
``FramingError``). In both cases the reply is already queued in
``data_to_send()``: send it, then close. A client that closes in the middle
of its handshake raises ``IncompleteReadError`` (nobody is left to answer).

``TunnelFailure`` names why a server could not open a tunnel, once for every
protocol; each machine maps it to its own reply code (RFC 1928 section 6,
the SOCKS4 spec's 91, RFC 9110 status codes).

Invariant shared by every machine: bytes buffered while the handshake is
incomplete are bounded by the protocol's longest message (520 bytes for
SOCKS; an HTTP head is capped by ``max_head_size``), so a peer that never
finishes cannot make a machine grow without bound.
"""

from __future__ import annotations

import enum
import errno as _errno
import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from ..errors import AddressError, FramingError, SettingError

__all__ = [
    "NEED_DATA",
    "DnsPolicy",
    "NeedData",
    "ProxyKind",
    "ProxyRequestError",
    "Reconnect",
    "Rejected",
    "TargetPlan",
    "TunnelClient",
    "TunnelFailure",
    "TunnelOpen",
    "TunnelRequest",
    "detect_proxy_protocol",
    "failure_for_errno",
    "format_authority",
    "is_ip_literal",
    "plan_target",
    "validate_hostname",
]

#: How a client names its target to the proxy, as ncat's ``--proxy-dns``:
#: ``local`` resolves here and sends an address; ``remote`` sends the name
#: for the proxy to resolve; ``both`` resolves here and falls back to sending
#: the name; ``none`` resolves nowhere (the target must be an IP address).
DnsPolicy = Literal["local", "remote", "both", "none"]

#: The longest host name in DNS (RFC 1035 section 2.3.4), also the most a
#: SOCKS5 domain field (one length byte) can carry.
MAX_HOSTNAME_LENGTH: Final = 255

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


class NeedData:
    """``next_event()`` needs more bytes from the peer before it can say more."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: The one ``NeedData`` instance (compare with ``is``, as h11's ``NEED_DATA``).
NEED_DATA: Final = NeedData()


class ProxyKind(enum.Enum):
    """The proxy protocol a connection's first byte announces."""

    SOCKS4 = "socks4"  # also SOCKS4a: the same first byte
    SOCKS5 = "socks5"
    HTTP = "http"


class TunnelFailure(enum.Enum):
    """Why a proxy server could not open the tunnel (RFC 1928 reply codes 1 to 8)."""

    GENERAL = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6  # also: the connection to the target timed out
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


@dataclass(frozen=True, slots=True)
class TunnelOpen:
    """Client side: the proxy opened the tunnel.

    Attributes:
        bound: the address the proxy says it connected from, or None when
            the protocol does not say (HTTP) or says nothing useful
            (SOCKS4 replies 0.0.0.0:0 to CONNECT).
        trailing_data: bytes that arrived after the proxy's reply: the
            target's first bytes, to be handed to the application.
    """

    bound: tuple[str, int] | None
    trailing_data: bytes


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Client side: the proxy closed after a challenge; open a new connection.

    Call the machine's ``reconnected()`` once connected again; its next
    ``data_to_send()`` is the request with credentials (HTTP Digest after a
    407 with ``Connection: close``).
    """


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    """Server side: a client asks for a tunnel (credentials already checked).

    Attributes:
        kind: the protocol it spoke.
        host: the target: an IP address in its usual text form, or a host
            name for the server to resolve (SOCKS4a, SOCKS5 domain, HTTP).
        port: the target port, 1 to 65535.
        username: the name the client gave (SOCKS4 user id, RFC 1929 user,
            HTTP Basic user), or None.
    """

    kind: ProxyKind
    host: str
    port: int
    username: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Server side: the client was turned away; its reply is queued. Send it, then close.

    Attributes:
        reason: one line for the server's log.
    """

    reason: str


class Outbox:
    """The bytes a handshake machine has queued for its peer.

    Every machine (SOCKS and HTTP, client and server) queues what it must
    send in ``_outgoing``; ``data_to_send`` hands it over once.
    """

    _outgoing: bytearray

    def data_to_send(self) -> bytes:
        """The bytes to send to the peer now (and forget), possibly b""."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out


class TunnelClient(Protocol):
    """What every client machine provides (``SocksClient``, ``HttpConnectClient``)."""

    def data_to_send(self) -> bytes:
        """The bytes to send to the proxy now (and forget), possibly b""."""
        ...

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the proxy; ``b""`` is end of stream."""
        ...

    def next_event(self) -> NeedData | TunnelOpen | Reconnect:
        """``NEED_DATA``, ``TunnelOpen``, or (HTTP only) ``Reconnect``.

        Raises:
            ProxyError: the proxy did not open the tunnel.
        """
        ...


class ProxyRequestError(FramingError):
    """A proxy client's bytes break the protocol (server side).

    The machine has queued the reply the protocol prescribes for it (a SOCKS
    general failure, an HTTP 400 or 431); send ``data_to_send()``, then close.
    """


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What a client does with its target's name before talking to the proxy.

    Attributes:
        resolve_locally: resolve the name here and send the address.
        send_name_if_unresolved: if local resolution fails, send the name
            for the proxy to resolve instead of failing.
    """

    resolve_locally: bool
    send_name_if_unresolved: bool


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 address in text form (no brackets, no zone)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_PLANS: Final = {
    "remote": TargetPlan(resolve_locally=False, send_name_if_unresolved=False),
    "local": TargetPlan(resolve_locally=True, send_name_if_unresolved=False),
    "both": TargetPlan(resolve_locally=True, send_name_if_unresolved=True),
}


def plan_target(host: str, dns: DnsPolicy) -> TargetPlan:
    """Decide, per ``dns``, where the target's name is resolved.

    An IP address needs no resolution whatever the policy.

    Raises:
        AddressError: ``dns`` is ``none`` and ``host`` is a name.
        SettingError: ``dns`` is not one of the four policies.
    """
    if is_ip_literal(host):
        return _PLANS["remote"]
    if dns == "none":
        raise AddressError(
            f"cannot reach {host!r} through the proxy without DNS "
            "(give an IP address, or let the proxy resolve the name)"
        )
    plan = _PLANS.get(dns)
    if plan is None:
        raise SettingError(f"unknown proxy DNS policy {dns!r}: choose local, remote, both or none")
    return plan


def validate_hostname(name: str) -> str:
    """Check a host name's syntax (RFC 1123 labels, underscores allowed); return it.

    Raises:
        ValueError: empty, too long, or a label with other characters.
    """
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        raise ValueError(f"host name of {len(name)} characters (1 to 255 allowed)")
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"malformed host name {name[:60]!r}")
    return name


def format_authority(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets (RFC 3986 section 3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def detect_proxy_protocol(first: bytes) -> ProxyKind | None:
    """Which proxy protocol a connection speaks, from its first byte.

    0x04 is SOCKS4 or 4a, 0x05 is SOCKS5 (the version byte of RFC 1928), an
    ASCII letter starts an HTTP method (RFC 9110 section 9: tokens, in
    practice upper-case letters).

    Returns:
        The kind, or None when ``first`` is empty (nothing has arrived yet).

    Raises:
        FramingError: the byte starts none of them.
    """
    if not first:
        return None
    byte = first[0]
    if byte == 4:
        return ProxyKind.SOCKS4
    if byte == 5:
        return ProxyKind.SOCKS5
    if 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A:
        return ProxyKind.HTTP
    raise FramingError(
        f"not a proxy protocol: the first byte 0x{byte:02x} starts neither SOCKS4, SOCKS5 nor HTTP"
    )


#: errno values from connect() and the failure each becomes (Linux and BSD
#: names; getattr skips the ones a platform lacks).
_ERRNO_FAILURES: Final = {
    code: failure
    for name, failure in (
        ("ECONNREFUSED", TunnelFailure.CONNECTION_REFUSED),
        ("ENETUNREACH", TunnelFailure.NETWORK_UNREACHABLE),
        ("ENETDOWN", TunnelFailure.NETWORK_UNREACHABLE),
        ("EHOSTUNREACH", TunnelFailure.HOST_UNREACHABLE),
        ("EHOSTDOWN", TunnelFailure.HOST_UNREACHABLE),
        ("ETIMEDOUT", TunnelFailure.TTL_EXPIRED),
        ("EAFNOSUPPORT", TunnelFailure.ADDRESS_TYPE_NOT_SUPPORTED),
        ("EACCES", TunnelFailure.NOT_ALLOWED),
        ("EPERM", TunnelFailure.NOT_ALLOWED),
    )
    if (code := getattr(_errno, name, None)) is not None
}


def failure_for_errno(code: int | None) -> TunnelFailure:
    """The failure to report for a connect to the target that failed with ``code``.

    Anything unknown, or no errno at all, is GENERAL. (A target name that
    does not resolve has no connect errno; HOST_UNREACHABLE is the closest
    reply RFC 1928 offers for it.)
    """
    if code is None:
        return TunnelFailure.GENERAL
    return _ERRNO_FAILURES.get(code, TunnelFailure.GENERAL)
