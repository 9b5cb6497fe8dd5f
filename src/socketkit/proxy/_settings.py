"""What a proxy server is told: credentials, the destination policy, timeouts; and
how it reaches a target (``connect_target``), for tunnels and forwarded requests alike.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from .._sockets import ConnectAttempt, aconnect_socket
from ..address import InetEndpoint
from ..errors import AddressError, SocketkitError, SocketTimeoutError, timeout_error
from ..framing.http_proxy import DEFAULT_MAX_BODY_SIZE, HttpProxyServer
from ..framing.socks import SocksServer
from ..framing.tunnel import ProxyKind, TunnelFailure, failure_for_errno, format_authority
from ._policy import DestinationPolicy

__all__ = [
    "DEFAULT_PROXY_CONNECT_TIMEOUT",
    "DEFAULT_PROXY_HANDSHAKE_TIMEOUT",
    "DEFAULT_PROXY_PORT",
    "Credentials",
    "ProxySettings",
    "TargetUnavailable",
    "check_credentials",
    "connect_target",
]

#: The SOCKS port (RFC 1928 section 3), also ncat's and curl's default.
DEFAULT_PROXY_PORT = 1080
#: 10 s to connect to a target: longer than a loopback or LAN connect ever
#: takes, shorter than a client's own handshake timeout (30 s for ours), so
#: the client hears "TTL expired" / 504 instead of timing out itself.
DEFAULT_PROXY_CONNECT_TIMEOUT = 10.0
#: 30 s for a client to finish its handshake (greeting, credentials, request).
DEFAULT_PROXY_HANDSHAKE_TIMEOUT = 30.0

Authenticate = Callable[[str, str], bool]
MachineType = SocksServer | HttpProxyServer


class Credentials:
    """One user name and password a proxy accepts.

    Calling it checks a pair in constant time (``hmac.compare_digest``, both
    always, so the time taken says nothing about which one was wrong);
    ``password_of`` serves HTTP Digest, which needs the password itself.
    """

    __slots__ = ("_password", "_user")

    def __init__(self, username: str, password: str) -> None:
        self._user = username
        self._password = password

    def __call__(self, user: str, given: str) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self._user.encode())
        password_ok = hmac.compare_digest(given.encode(), self._password.encode())
        return user_ok and password_ok

    def password_of(self, user: str) -> str | None:
        """The password of ``user``, or None for a user we do not know."""
        return self._password if hmac.compare_digest(user.encode(), self._user.encode()) else None


def check_credentials(username: str, password: str) -> Credentials:
    """The check accepting exactly ``username`` and ``password`` (see ``Credentials``)."""
    return Credentials(username, password)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """How a proxy serves its clients.

    Attributes:
        authenticate: if set, clients must give credentials it accepts
            (SOCKS5 RFC 1929, HTTP Basic); SOCKS4 clients are then refused.
            A ``Credentials`` also serves HTTP Digest (RFC 7616).
        policy: which targets may be reached (``--allow-dest``/``--deny-dest``).
        connect_timeout: seconds to connect to a target.
        handshake_timeout: seconds for a client to finish its handshake.
        family: AF_UNSPEC, or AF_INET/AF_INET6 to reach targets over one only.
        forward: forward plain ``http://`` requests (else 405).
        max_body_size: the largest forwarded request body, in bytes.
    """

    authenticate: Authenticate | None = None
    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    connect_timeout: float = DEFAULT_PROXY_CONNECT_TIMEOUT
    handshake_timeout: float = DEFAULT_PROXY_HANDSHAKE_TIMEOUT
    family: int = socket.AF_UNSPEC
    forward: bool = True
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: The key of HTTP Digest nonces, one per server so that a nonce from a
    #: 407 is recognised on the client's next connection.
    digest_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def machine(self, kind: ProxyKind) -> MachineType:
        """A fresh server machine for a client speaking ``kind``."""
        if kind is ProxyKind.HTTP:
            check = self.authenticate
            digest = check.password_of if isinstance(check, Credentials) else None
            return HttpProxyServer(
                authenticate=self.authenticate,
                digest_password=digest,
                digest_secret=self.digest_secret,
                forward=self.forward,
                max_body_size=self.max_body_size,
            )
        return SocksServer(authenticate=self.authenticate)


class TargetUnavailable(Exception):
    """The target cannot be connected: ``failure`` for the reply, ``reason`` for the log."""

    def __init__(self, failure: TunnelFailure, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


async def connect_target(host: str, port: int, settings: ProxySettings) -> socket.socket:
    """A non-blocking socket connected to ``host:port``, each allowed address in turn.

    ``_sockets.aconnect_socket`` does the connecting (the name resolved in the
    loop's executor, sockets from the seam); every resolved address is
    checked against the policy before it is tried.

    Raises:
        TargetUnavailable: denied, unresolvable, or every connect failed.
    """
    policy = settings.policy
    refusal = policy.check(host, port)
    if refusal is not None:
        raise TargetUnavailable(TunnelFailure.NOT_ALLOWED, refusal)
    denied: list[str] = []

    def admit(attempt: ConnectAttempt) -> bool:
        reason = policy.check(host, port, str(attempt.sockaddr[0]))
        if reason is not None:
            denied.append(reason)
        return reason is None

    timeout = settings.connect_timeout
    try:
        async with asyncio.timeout(timeout):
            return await aconnect_socket(InetEndpoint(host, port), settings.family, admit=admit)
    except TimeoutError:
        where = format_authority(host, port)
        raise TargetUnavailable(
            TunnelFailure.TTL_EXPIRED, str(timeout_error("connect", where, timeout))
        ) from None
    except AddressError as exc:
        raise TargetUnavailable(TunnelFailure.HOST_UNREACHABLE, str(exc)) from None
    except SocketkitError as exc:
        if denied and exc.errno is None:
            raise TargetUnavailable(TunnelFailure.NOT_ALLOWED, denied[0]) from None
        if isinstance(exc, SocketTimeoutError):
            raise TargetUnavailable(TunnelFailure.TTL_EXPIRED, str(exc)) from None
        raise TargetUnavailable(failure_for_errno(exc.errno), str(exc)) from None
