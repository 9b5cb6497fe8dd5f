"""SOCKS4, SOCKS4a and SOCKS5 handshakes, client and server, sans-I/O.

The wire formats (every integer in network byte order):

SOCKS4 (Ying-Da Lee, "SOCKS: A protocol for TCP proxy across firewalls"),
and SOCKS4a ("SOCKS 4A: A Simple Extension to SOCKS 4 Protocol")::

    request  VN=4 CD=1 DSTPORT(2) DSTIP(4) USERID... NUL [HOSTNAME... NUL]
    reply    VN=0 CD(90 granted, 91 rejected, 92/93 identd) DSTPORT(2) DSTIP(4)

  SOCKS4a marks a host name with DSTIP 0.0.0.x, x not 0; the name follows
  the user id.

SOCKS5 (RFC 1928) with username/password authentication (RFC 1929)::

    greeting  VER=5 NMETHODS METHODS(1..255)          reply VER=5 METHOD
    auth      VER=1 ULEN UNAME PLEN PASSWD            reply VER=1 STATUS(0 ok)
    request   VER=5 CMD RSV=0 ATYP DST.ADDR DST.PORT  reply VER=5 REP RSV=0 ATYP BND.ADDR BND.PORT

  ATYP 1 is 4 bytes of IPv4, 3 a length byte and a domain name, 4 is 16
  bytes of IPv6.

Only CONNECT is served; BIND and UDP ASSOCIATE are answered "command not
supported". Every field is checked: versions, reserved bytes, method lists,
lengths (a domain or credential is at most 255 bytes by construction, a
SOCKS4 user id or host name is cut off at 255), ports (0 is no target) and
host names (``tunnel.validate_hostname``). So the machine never waits for
more than 520 bytes of one message (a SOCKS4a request with the longest user
id and name; an RFC 1929 message is at most 513, a SOCKS5 request 262)
before it answers or raises.

Failures a client meets become ``ProxyError`` subclasses whose message names
the reply code in words; see ``tunnel`` for the events and the calling
pattern.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable
from typing import Final, Literal

from ..errors import (
    FramingError,
    IncompleteReadError,
    ProxyAuthError,
    ProxyError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTargetError,
    SettingError,
)
from ._buffer import ReceiveBuffer
from .tunnel import (
    NEED_DATA,
    NeedData,
    Outbox,
    ProxyKind,
    ProxyRequestError,
    Rejected,
    TunnelFailure,
    TunnelOpen,
    TunnelRequest,
    format_authority,
    is_ip_literal,
    validate_hostname,
)

__all__ = [
    "SOCKS4_REPLIES",
    "SOCKS5_REPLIES",
    "Authenticate",
    "SocksClient",
    "SocksServer",
]

#: A server's credential check: (username, password) -> accepted. Pure, no I/O.
Authenticate = Callable[[str, str], bool]

#: RFC 1928 section 6, the REP field in words.
SOCKS5_REPLIES: Final = {
    0: "succeeded",
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}

#: The SOCKS4 spec's CD field of a reply, in words.
SOCKS4_REPLIES: Final = {
    90: "request granted",
    91: "request rejected or failed",
    92: "request rejected: the proxy cannot reach our identd",
    93: "request rejected: identd reports a different user id",
}

_METHOD_NONE: Final = 0x00
_METHOD_PASSWORD: Final = 0x02
_METHOD_UNACCEPTABLE: Final = 0xFF
_AUTH_VERSION: Final = 0x01  # RFC 1929's sub-negotiation version
_CMD_CONNECT: Final = 0x01
_ATYP_IPV4: Final = 0x01
_ATYP_DOMAIN: Final = 0x03
_ATYP_IPV6: Final = 0x04
_SOCKS4_GRANTED: Final = 90
_SOCKS4_REJECTED: Final = 91
#: The most a SOCKS4 user id or SOCKS4a host name may take (NUL not counted):
#: the spec sets no limit, so we take the SOCKS5 one, which is also DNS's.
_MAX_SOCKS4_FIELD: Final = 255

_PORT = struct.Struct("!H")
_SOCKS4_HEAD = struct.Struct("!BBH4s")  # VN CD DSTPORT DSTIP


# -- shared helpers ----------------------------------------------------------


def _encode_address(host: str) -> bytes:
    """ATYP and DST.ADDR for ``host`` (RFC 1928 section 5)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        return bytes([_ATYP_DOMAIN, len(name)]) + name
    return bytes([_ATYP_IPV4 if address.version == 4 else _ATYP_IPV6]) + address.packed


def _address_length(buffer: ReceiveBuffer, offset: int) -> int | None:
    """Length of ATYP + ADDR + PORT at ``offset``; None until the length is known.

    Raises:
        ValueError: an unknown ATYP (the message's length cannot be known).
    """
    head = buffer.peek(offset + 2)
    if len(head) < offset + 1:
        return None
    atyp = head[offset]
    if atyp == _ATYP_IPV4:
        return 1 + 4 + 2
    if atyp == _ATYP_IPV6:
        return 1 + 16 + 2
    if atyp == _ATYP_DOMAIN:
        if len(head) < offset + 2:
            return None
        return 2 + head[offset + 1] + 2
    raise ValueError(f"unknown address type {atyp}")


def _decode_address(field: bytes) -> tuple[str, int]:
    """(host, port) from ATYP + ADDR + PORT, as measured by ``_address_length``.

    Raises:
        ValueError: an empty or malformed domain name.
    """
    (port,) = _PORT.unpack(field[-2:])
    atyp = field[0]
    if atyp == _ATYP_IPV4:
        return str(ipaddress.IPv4Address(field[1:5])), port
    if atyp == _ATYP_IPV6:
        return str(ipaddress.IPv6Address(field[1:17])), port
    return _decode_hostname(field[2:-2]), port


def _decode_hostname(raw: bytes) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"host name {raw[:60]!r} is not ASCII") from None
    return validate_hostname(name)


def _unspecified_is_none(host: str, port: int) -> tuple[str, int] | None:
    """A bound address, or None for the "nothing to say" 0.0.0.0:0 (or [::]:0)."""
    if port == 0 and ipaddress.ip_address(host).is_unspecified:
        return None
    return host, port


def _credential(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= 255:
        raise SettingError(f"SOCKS5 {what} must be 1 to 255 bytes in UTF-8 (RFC 1929)")
    return raw


# -- client ------------------------------------------------------------------


class _ClientState(enum.Enum):
    METHOD = "waiting for the method choice"
    AUTH = "waiting for the authentication status"
    REPLY = "waiting for the reply"
    OPEN = "tunnel open"


class _SocksMachine(Outbox):
    """What both SOCKS machines keep: the bytes received so far and end of stream."""

    _buffer: ReceiveBuffer
    _eof: bool

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer; ``b""`` is end of stream."""
        if data:
            self._buffer.feed(data)
        else:
            self._eof = True


class SocksClient(_SocksMachine):
    """The client side of a SOCKS4, SOCKS4a or SOCKS5 CONNECT handshake.

    The first request is in ``data_to_send()`` as soon as the machine is
    made. A ``host`` that is a name goes to the proxy to resolve (SOCKS4a,
    or a SOCKS5 domain); resolve it first to send an address instead (see
    ``tunnel.plan_target``).

    Args:
        version: 4 or 5.
        host: the target, an IP address or a host name.
        port: the target port, 1 to 65535.
        username: SOCKS4's user id, or the RFC 1929 user name.
        password: the RFC 1929 password (SOCKS5 only). With a username, the
            greeting offers username/password beside "no authentication".

    Raises:
        SettingError: a target or credential this protocol cannot carry.
    """

    def __init__(
        self,
        version: Literal[4, 5],
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if version not in (4, 5):
            raise SettingError(f"no SOCKS version {version}: choose 4 or 5")
        if not 1 <= port <= 65535:
            raise SettingError(f"target port {port} is outside 1..65535")
        self.version = version
        self.protocol = f"SOCKS{version}"
        self._target = format_authority(host, port)
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._outgoing = bytearray()
        self._credentials: tuple[bytes, bytes] | None = None
        if not is_ip_literal(host):
            try:
                validate_hostname(host)
                host.encode("ascii")
            except (ValueError, UnicodeEncodeError):
                raise SettingError(f"cannot send target {host[:60]!r} to a SOCKS proxy") from None
        if version == 4:
            if password is not None:
                raise SettingError("SOCKS4 carries a user id, not a password (use SOCKS5)")
            self._outgoing += self._socks4_request(host, port, username or "")
            self._state = _ClientState.REPLY
        else:
            if username is not None:
                self._credentials = (
                    _credential(username, "user name"),
                    _credential(password or "", "password") if password else b"",
                )
            self._request = b"\x05\x01\x00" + _encode_address(host) + _PORT.pack(port)
            methods = [_METHOD_NONE] + ([_METHOD_PASSWORD] if self._credentials else [])
            self._offered = methods
            self._outgoing += bytes([5, len(methods), *methods])
            self._state = _ClientState.METHOD

    @staticmethod
    def _socks4_request(host: str, port: int, userid: str) -> bytes:
        user = userid.encode("utf-8")
        if b"\x00" in user or len(user) > _MAX_SOCKS4_FIELD:
            raise SettingError("a SOCKS4 user id must be at most 255 bytes without NUL")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            # SOCKS4a: an invalid address 0.0.0.1 says "the name follows".
            return (
                _SOCKS4_HEAD.pack(4, _CMD_CONNECT, port, b"\x00\x00\x00\x01")
                + user
                + b"\x00"
                + host.encode("ascii")
                + b"\x00"
            )
        if address.version != 4:
            raise SettingError(f"SOCKS4 cannot carry the IPv6 target {host} (use SOCKS5)")
        if address.packed[:3] == bytes(3):
            # 0.0.0.x is SOCKS4a's "a name follows" marker, 0.0.0.0 no address.
            raise SettingError(f"SOCKS4 cannot carry the target {host}")
        return _SOCKS4_HEAD.pack(4, _CMD_CONNECT, port, address.packed) + user + b"\x00"

    def next_event(self) -> NeedData | TunnelOpen:
        """``NEED_DATA``, or ``TunnelOpen`` once the proxy granted the request.

        Raises:
            ProxyAuthError: no acceptable method, or credentials rejected.
            ProxyRefusedError: the proxy refused (ruleset, general failure).
            ProxyTargetError: the proxy could not reach the target.
            ProxyProtocolError: the reply is not SOCKS, or malformed.
        """
        if self._state is _ClientState.OPEN:
            raise FramingError("the SOCKS tunnel is already open", remote=False)
        while True:
            state = self._state
            event = self._step()
            if event is not None:
                return event
            if self._state is state:  # no progress: more bytes needed
                if self._eof:
                    raise ProxyRefusedError(
                        f"{self.protocol} proxy closed the connection while we were "
                        f"{self._state.value} (target {self._target})",
                        protocol=self.protocol,
                    )
                return NEED_DATA

    def _step(self) -> TunnelOpen | None:
        """One step: the event, or None (the state advanced, or more bytes are needed)."""
        if self.version == 4:
            return self._step_socks4()
        if self._state is _ClientState.METHOD:
            self._step_method()
        elif self._state is _ClientState.AUTH:
            self._step_auth()
        else:
            return self._step_reply()
        return None

    def _need(self, n: int) -> bytes | None:
        data = self._buffer.peek(n)
        return data if len(data) == n else None

    def _not_socks(self, data: bytes) -> ProxyProtocolError:
        return ProxyProtocolError(
            f"the proxy does not speak {self.protocol}: its reply starts {data[:16]!r}",
            protocol=self.protocol,
        )

    def _step_socks4(self) -> TunnelOpen | None:
        data = self._need(8)
        if data is None:
            return None
        version, code, port, raw_ip = _SOCKS4_HEAD.unpack(data)
        if version != 0:
            raise self._not_socks(data)
        if code == _SOCKS4_GRANTED:
            self._buffer.discard(8)
            self._state = _ClientState.OPEN
            bound = _unspecified_is_none(str(ipaddress.IPv4Address(raw_ip)), port)
            return TunnelOpen(bound, self._buffer.extract_all())
        words = SOCKS4_REPLIES.get(code)
        if words is None:
            raise ProxyProtocolError(
                f"SOCKS4 proxy sent an unknown reply code {code}", protocol="SOCKS4", reply=code
            )
        error = ProxyAuthError if code in (92, 93) else ProxyRefusedError
        raise error(
            f"SOCKS4 proxy refused the connection to {self._target}: {words} (reply {code})",
            protocol="SOCKS4",
            reply=code,
        )

    def _step_method(self) -> None:
        data = self._need(2)
        if data is None:
            return
        if data[0] != 5:
            raise self._not_socks(data)
        method = data[1]
        if method == _METHOD_UNACCEPTABLE:
            offered = "username/password" if self._credentials else "no authentication"
            raise ProxyAuthError(
                f"SOCKS5 proxy accepts none of our authentication methods (offered: {offered}"
                f"{'' if self._credentials else '; it may want a username and password'})",
                protocol="SOCKS5",
                reply=method,
            )
        if method not in self._offered:
            raise ProxyProtocolError(
                f"SOCKS5 proxy chose authentication method 0x{method:02x}, which we did not offer",
                protocol="SOCKS5",
                reply=method,
            )
        self._buffer.discard(2)
        if method == _METHOD_PASSWORD and self._credentials is not None:
            user, password = self._credentials
            self._outgoing += bytes([_AUTH_VERSION, len(user)]) + user
            self._outgoing += bytes([len(password)]) + password
            self._state = _ClientState.AUTH
        else:
            self._outgoing += self._request
            self._state = _ClientState.REPLY

    def _step_auth(self) -> None:
        data = self._need(2)
        if data is None:
            return
        if data[0] != _AUTH_VERSION:
            raise ProxyProtocolError(
                f"SOCKS5 proxy answered authentication with version {data[0]} (RFC 1929 says 1)",
                protocol="SOCKS5",
            )
        if data[1] != 0:
            raise ProxyAuthError(
                f"SOCKS5 proxy rejected the username and password (status {data[1]})",
                protocol="SOCKS5",
                reply=data[1],
            )
        self._buffer.discard(2)
        self._outgoing += self._request
        self._state = _ClientState.REPLY

    def _step_reply(self) -> TunnelOpen | None:
        data = self._need(2)
        if data is None:
            return None
        if data[0] != 5:
            raise self._not_socks(data)
        code = data[1]
        if code != 0:
            # Fail at once: some servers close after VER REP without the rest.
            raise _socks5_error(code, self._target)
        try:
            length = _address_length(self._buffer, 3)
        except ValueError as exc:
            raise ProxyProtocolError(
                f"SOCKS5 proxy sent a malformed reply: {exc}", protocol="SOCKS5"
            ) from None
        if length is None or len(self._buffer) < 3 + length:
            return None
        reply = self._buffer.extract(3 + length)
        if reply[2] != 0:
            raise ProxyProtocolError(
                f"SOCKS5 proxy sent a reply with reserved byte 0x{reply[2]:02x} (RFC 1928 says 0)",
                protocol="SOCKS5",
            )
        try:
            host, port = _decode_address(reply[3:])
        except ValueError as exc:
            raise ProxyProtocolError(
                f"SOCKS5 proxy sent a malformed bound address: {exc}", protocol="SOCKS5"
            ) from None
        self._state = _ClientState.OPEN
        bound = _unspecified_is_none(host, port) if is_ip_literal(host) else (host, port)
        return TunnelOpen(bound, self._buffer.extract_all())


def _socks5_error(code: int, target: str) -> ProxyError:
    words = SOCKS5_REPLIES.get(code, f"unassigned reply code 0x{code:02x}")
    if code in (3, 4, 5, 6):
        return ProxyTargetError(
            f"SOCKS5 proxy could not reach {target}: {words} (reply {code})",
            protocol="SOCKS5",
            reply=code,
        )
    return ProxyRefusedError(
        f"SOCKS5 proxy refused the connection to {target}: {words} (reply {code})",
        protocol="SOCKS5",
        reply=code,
    )


# -- server ------------------------------------------------------------------


class _ServerState(enum.Enum):
    VERSION = "version"
    GREETING = "greeting"
    AUTH = "authentication"
    REQUEST = "request"
    DECIDE = "decision"  # TunnelRequest handed out; waiting for accept/refuse
    OPEN = "open"
    CLOSED = "closed"


#: TunnelFailure -> SOCKS5 REP is the enum's value; SOCKS4 has one code for all.
_SOCKS4_FAILURE: Final = _SOCKS4_REJECTED


class SocksServer(_SocksMachine):
    """The server side of a SOCKS4, SOCKS4a or SOCKS5 CONNECT handshake.

    The version is read from the first byte. ``next_event()`` answers
    ``NEED_DATA`` while the greeting, authentication and request arrive
    (queueing the method choice and authentication status for
    ``data_to_send()``), then ``TunnelRequest`` or ``Rejected``. Answer a
    ``TunnelRequest`` with ``accept`` or ``refuse``.

    Args:
        authenticate: if given, SOCKS5 clients must authenticate with a
            username and password (RFC 1929) this accepts, and SOCKS4
            clients, which cannot send a password, are rejected.
    """

    def __init__(self, *, authenticate: Authenticate | None = None) -> None:
        self._authenticate = authenticate
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._outgoing = bytearray()
        self._state = _ServerState.VERSION
        self._version = 0
        self._username: str | None = None

    @property
    def kind(self) -> ProxyKind | None:
        """SOCKS4 or SOCKS5 once the first byte has been read, else None."""
        return {4: ProxyKind.SOCKS4, 5: ProxyKind.SOCKS5}.get(self._version)

    def next_event(self) -> NeedData | TunnelRequest | Rejected:
        """The next thing the client said (see the class docstring).

        Raises:
            ProxyRequestError: malformed bytes; the reply is queued.
            IncompleteReadError: the client closed in mid-handshake.
        """
        if self._state in (_ServerState.DECIDE, _ServerState.OPEN, _ServerState.CLOSED):
            raise ProxyRequestError(
                f"no SOCKS event to read in the {self._state.value} state", remote=False
            )
        while True:
            state = self._state
            event = self._step()
            if event is not None:
                return event
            if self._state is state:  # no progress: more bytes needed
                if self._eof:
                    raise IncompleteReadError(
                        f"SOCKS client closed the connection during its {state.value}",
                        partial=self._buffer.extract_all(),
                    )
                return NEED_DATA

    def accept(self, bound: tuple[str, int] = ("0.0.0.0", 0)) -> None:
        """Grant the ``TunnelRequest``: queue the success reply.

        Args:
            bound: the address the server connected to the target from
                (SOCKS4 can only say an IPv4 one; others are sent as 0.0.0.0).
        """
        self._expect_decision()
        host, port = bound
        if self._version == 4:
            address = ipaddress.ip_address(host)
            packed = address.packed if address.version == 4 else bytes(4)
            self._outgoing += _SOCKS4_HEAD.pack(0, _SOCKS4_GRANTED, port, packed)
        else:
            self._outgoing += b"\x05\x00\x00" + _encode_address(host) + _PORT.pack(port)
        self._state = _ServerState.OPEN

    def refuse(self, failure: TunnelFailure) -> None:
        """Turn the ``TunnelRequest`` down: queue the failure reply; then close."""
        self._expect_decision()
        self._reply_failure(failure)

    @property
    def trailing_data(self) -> bytes:
        """After ``accept``: bytes the client sent after its request (tunnel data).

        Reading it consumes it.
        """
        if self._state is not _ServerState.OPEN:
            raise ProxyRequestError("the SOCKS tunnel is not open", remote=False)
        return self._buffer.extract_all()

    # -- internals -------------------------------------------------------

    def _expect_decision(self) -> None:
        if self._state is not _ServerState.DECIDE:
            raise ProxyRequestError(
                f"no SOCKS request to answer in the {self._state.value} state", remote=False
            )

    def _reply_failure(self, failure: TunnelFailure) -> None:
        if self._version == 4:
            self._outgoing += _SOCKS4_HEAD.pack(0, _SOCKS4_FAILURE, 0, bytes(4))
        else:
            self._outgoing += bytes([5, failure.value, 0, _ATYP_IPV4]) + bytes(6)
        self._state = _ServerState.CLOSED

    def _reject(self, failure: TunnelFailure, reason: str) -> Rejected:
        self._reply_failure(failure)
        return Rejected(reason)

    def _malformed(self, text: str) -> ProxyRequestError:
        """A protocol violation: queue a general failure (if a version is known)."""
        if self._version:
            self._reply_failure(TunnelFailure.GENERAL)
        self._state = _ServerState.CLOSED
        name = f"SOCKS{self._version}" if self._version else "SOCKS"
        return ProxyRequestError(f"bad {name} request: {text}")

    def _step(self) -> TunnelRequest | Rejected | None:
        if self._state is _ServerState.VERSION:
            head = self._buffer.peek(1)
            if head:
                if head[0] not in (4, 5):
                    raise self._malformed(f"version byte 0x{head[0]:02x} is neither 4 nor 5")
                self._version = head[0]
                self._state = _ServerState.REQUEST if head[0] == 4 else _ServerState.GREETING
            return None
        if self._version == 4:
            return self._step_socks4()
        if self._state is _ServerState.GREETING:
            return self._step_greeting()
        if self._state is _ServerState.AUTH:
            return self._step_auth()
        return self._step_request()

    def _maybe_cstring(self, offset: int, what: str) -> int | None:
        """Index of the NUL ending a SOCKS4 string at ``offset``; None until it arrives."""
        data = self._buffer.peek(offset + _MAX_SOCKS4_FIELD + 1)
        end = data.find(b"\x00", offset)
        if end < 0:
            if len(data) > offset + _MAX_SOCKS4_FIELD:
                raise self._malformed(f"{what} longer than {_MAX_SOCKS4_FIELD} bytes")
            return None
        return end

    def _step_socks4(self) -> TunnelRequest | Rejected | None:
        head = self._buffer.peek(8)
        if len(head) < 8:
            return None
        _vn, command, port, raw_ip = _SOCKS4_HEAD.unpack(head)
        user_end = self._maybe_cstring(8, "user id")
        if user_end is None:
            return None
        end = user_end
        socks4a = raw_ip[:3] == b"\x00\x00\x00" and raw_ip[3] != 0
        if socks4a:
            name_end = self._maybe_cstring(user_end + 1, "host name")
            if name_end is None:
                return None
            end = name_end
        request = self._buffer.extract(end + 1)
        # Names are text for logs and checks; bytes that are not UTF-8 stay
        # visible as escapes (and printable) instead of failing the request.
        userid = request[8:user_end].decode("utf-8", "backslashreplace")
        if command != _CMD_CONNECT:
            words = "BIND" if command == 2 else f"command {command}"
            if command == 2:
                return self._reject(TunnelFailure.COMMAND_NOT_SUPPORTED, f"SOCKS4 {words}")
            raise self._malformed(f"unknown {words}")
        if port == 0:
            raise self._malformed("target port 0")
        if socks4a:
            try:
                host = _decode_hostname(request[user_end + 1 : end])
            except ValueError as exc:
                raise self._malformed(str(exc)) from None
        elif raw_ip == bytes(4):
            raise self._malformed("target address 0.0.0.0")
        else:
            host = str(ipaddress.IPv4Address(raw_ip))
        if self._authenticate is not None:
            return self._reject(
                TunnelFailure.NOT_ALLOWED,
                "SOCKS4 carries no password and this proxy requires authentication",
            )
        self._state = _ServerState.DECIDE
        return TunnelRequest(ProxyKind.SOCKS4, host, port, userid or None)

    def _step_greeting(self) -> Rejected | None:
        head = self._buffer.peek(2)
        if len(head) < 2:
            return None
        count = head[1]
        if count == 0:
            raise self._malformed("greeting offers no authentication method")
        if len(self._buffer) < 2 + count:
            return None
        methods = self._buffer.extract(2 + count)[2:]
        wanted = _METHOD_NONE if self._authenticate is None else _METHOD_PASSWORD
        if wanted not in methods:
            self._outgoing += bytes([5, _METHOD_UNACCEPTABLE])
            self._state = _ServerState.CLOSED
            need = "no authentication" if self._authenticate is None else "username/password"
            return Rejected(f"SOCKS5 client does not offer {need}")
        self._outgoing += bytes([5, wanted])
        self._state = _ServerState.AUTH if wanted == _METHOD_PASSWORD else _ServerState.REQUEST
        return None

    def _step_auth(self) -> Rejected | None:
        head = self._buffer.peek(2)
        if len(head) < 2:
            return None
        if head[0] != _AUTH_VERSION:
            self._outgoing += bytes([_AUTH_VERSION, 1])
            self._state = _ServerState.CLOSED
            raise ProxyRequestError(
                f"bad SOCKS5 authentication: version {head[0]} (RFC 1929 says 1)"
            )
        user_length = head[1]
        data = self._buffer.peek(2 + user_length + 1)
        if len(data) < 3 + user_length:
            return None
        total = 3 + user_length + data[2 + user_length]
        if len(self._buffer) < total:
            return None
        message = self._buffer.extract(total)
        user = message[2 : 2 + user_length].decode("utf-8", "backslashreplace")
        password = message[3 + user_length :].decode("utf-8", "backslashreplace")
        assert self._authenticate is not None  # AUTH is entered only with one
        if not user or not self._authenticate(user, password):
            self._outgoing += bytes([_AUTH_VERSION, 1])
            self._state = _ServerState.CLOSED
            return Rejected(f"SOCKS5 authentication failed for user {user!r}")
        self._outgoing += bytes([_AUTH_VERSION, 0])
        self._username = user
        self._state = _ServerState.REQUEST
        return None

    def _step_request(self) -> TunnelRequest | Rejected | None:
        head = self._buffer.peek(4)
        if len(head) < 4:
            return None
        version, command, reserved, atyp = head
        if version != 5:
            raise self._malformed(f"request version {version} (expected 5)")
        if reserved != 0:
            raise self._malformed(f"reserved byte 0x{reserved:02x} (RFC 1928 says 0)")
        if atyp not in (_ATYP_IPV4, _ATYP_DOMAIN, _ATYP_IPV6):
            # The address's length is unknown, so nothing after it can be read.
            return self._reject(
                TunnelFailure.ADDRESS_TYPE_NOT_SUPPORTED, f"SOCKS5 address type {atyp}"
            )
        length = _address_length(self._buffer, 3)
        if length is None or len(self._buffer) < 3 + length:
            return None
        request = self._buffer.extract(3 + length)
        if command != _CMD_CONNECT:
            names = {2: "BIND", 3: "UDP ASSOCIATE"}
            return self._reject(
                TunnelFailure.COMMAND_NOT_SUPPORTED,
                f"SOCKS5 {names.get(command, f'command {command}')}",
            )
        try:
            host, port = _decode_address(request[3:])
        except ValueError as exc:
            raise self._malformed(str(exc)) from None
        if port == 0:
            raise self._malformed("target port 0")
        self._state = _ServerState.DECIDE
        return TunnelRequest(ProxyKind.SOCKS5, host, port, self._username)
