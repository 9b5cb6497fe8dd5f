"""HTTP proxy handshakes on h11: CONNECT tunnels and forwarded requests, sans-I/O.

Client (``HttpConnectClient``): ``CONNECT host:port HTTP/1.1`` with a
``Host`` header (RFC 9110 section 9.3.6), optionally
``Proxy-Authorization`` with Basic (RFC 7617) credentials sent up front, or
with a Digest (RFC 7616) answer when the proxy challenges with a 407. Any
2xx opens the tunnel; h11 hands back bytes that arrived after the response.

Server (``HttpProxyServer``): reads one request at a time with h11, checks
``Proxy-Authorization`` (Basic) when configured, and tells the caller what
the client asked:

- ``CONNECT host:port`` (authority-form, RFC 9112 section 3.2.3) is a
  ``TunnelRequest``; ``accept`` answers 200 and the connection is a tunnel.
- ``GET http://host[:port]/path`` (absolute-form, section 3.2.2) is a
  ``ForwardRequest`` with the origin-form target and end-to-end headers,
  then its body as ``RequestBody`` events and a ``RequestEnd``; the caller
  forwards it and relays the answer with ``send_response``, ``send_body``
  and ``end_response``; keep-alive then reads the next request.

Replies to failures (RFC 9110 section 15): 400 malformed request or target,
403 not allowed, 405 a method this proxy does not forward, 407 credentials
missing or wrong, 413 body over ``max_body_size``, 431 head over
``max_head_size`` (h11's limit, RFC 6585), 502 target unreachable or
refused, 504 target timed out. Every refusal closes the connection.

Hop-by-hop headers (RFC 9110 section 7.6.1: ``Connection`` and the fields it
names, ``Proxy-Connection``, ``Keep-Alive``, ``TE``, ``Trailer``,
``Transfer-Encoding``, ``Upgrade``, ``Proxy-Authorization``,
``Proxy-Authenticate``) are dropped from what is forwarded; h11 frames each
hop's body itself (Content-Length, or chunked when the length is unknown).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import http
import ipaddress
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11

from ..errors import (
    FramingError,
    IncompleteReadError,
    ProxyAuthError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTargetError,
    SettingError,
)
from .tunnel import (
    NEED_DATA,
    NeedData,
    Outbox,
    ProxyKind,
    ProxyRequestError,
    Reconnect,
    Rejected,
    TunnelFailure,
    TunnelOpen,
    TunnelRequest,
    format_authority,
    is_ip_literal,
    validate_hostname,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEAD_SIZE",
    "ClientClosed",
    "ForwardRequest",
    "HttpConnectClient",
    "HttpProxyServer",
    "RequestBody",
    "RequestEnd",
    "digest_response",
    "end_to_end_headers",
    "parse_challenges",
]

#: 16 KiB for a request or response head: h11's default, and as much as
#: common servers allow (nginx's large_client_header_buffers is 8 KiB a line).
DEFAULT_MAX_HEAD_SIZE: Final = 16 * 1024
#: 64 MiB: the largest request body a forward proxy relays by default, so
#: one client cannot stream without end through a shared proxy.
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024 * 1024

Headers = list[tuple[bytes, bytes]]
Authenticate = Callable[[str, str], bool]

_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)


# -- shared helpers ----------------------------------------------------------


def end_to_end_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """``headers`` without hop-by-hop fields (RFC 9110 section 7.6.1).

    Names are compared without regard to case; the pairs keep their order
    and spelling.
    """
    pairs = list(headers)
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    return [
        (name, value)
        for name, value in pairs
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named
    ]


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def _parse_authority(text: str) -> tuple[str, int]:
    """(host, port) from ``host:port`` or ``[v6]:port``.

    Raises:
        ValueError: no port, a bad port, or a bad host.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"target {text[:60]!r} is not host:port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"target port {port} is outside 1..65535")
    return _parse_host(host), port


def _parse_uri_authority(netloc: str) -> tuple[str, int]:
    """(host, port) from an http:// URI's authority; port 80 when absent (RFC 9110 4.2.1).

    Raises:
        ValueError: user information (RFC 9110 section 4.2.4 forbids it), a
            bad host or a bad port.
    """
    if "@" in netloc:
        raise ValueError("user information in an http:// URI")
    if netloc.endswith("]") or ":" not in netloc:
        return _parse_host(netloc), 80
    return _parse_authority(netloc)


def _parse_host(host: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        address = ipaddress.ip_address(host[1:-1])  # ValueError if not an address
        if address.version != 6:
            raise ValueError(f"{host} in brackets is not an IPv6 address")
        return str(address)
    if is_ip_literal(host):
        if ":" in host:
            raise ValueError(f"IPv6 address {host} must be in brackets")
        return str(ipaddress.ip_address(host))
    return validate_hostname(host).lower()


# -- authentication: Basic (RFC 7617), Digest (RFC 7616) ----------------------


def _basic(username: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


def parse_challenges(values: Iterable[bytes]) -> list[tuple[str, dict[str, str]]]:
    """The challenges in ``Proxy-Authenticate`` values (RFC 9110 section 11.2).

    Each is (scheme in lower case, parameters with lower-case names).
    A ``token68`` (Basic's old form) is kept under the parameter "".

    Raises:
        ValueError: the text does not follow the grammar.
    """
    challenges: list[tuple[str, dict[str, str]]] = []
    for raw in values:
        text = raw.decode("latin-1")
        i, n = 0, len(text)
        while i < n:
            while i < n and text[i] in " \t,":
                i += 1
            if i >= n:
                break
            start = i
            while i < n and text[i] not in " \t,=":
                i += 1
            token = text[start:i]
            j = i
            while j < n and text[j] in " \t":
                j += 1
            if challenges and j < n and text[j] == "=":
                # name=value of the current challenge
                j += 1
                while j < n and text[j] in " \t":
                    j += 1
                value, i = _param_value(text, j)
                challenges[-1][1][token.lower()] = value
                continue
            if not token:
                raise ValueError(f"malformed challenge {text[:60]!r}")
            challenges.append((token.lower(), {}))
            i = j
            # token68: a run of token68 characters not followed by "=" + value
            start = i
            while i < n and text[i] not in " \t,":
                i += 1
            word = text[start:i]
            if word and "=" in word.rstrip("=") and not word.endswith("="):
                i = start  # it is name=value: parse it as a parameter next
            elif word:
                challenges[-1][1][""] = word
    return challenges


def _param_value(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    if i < n and text[i] == '"':
        out: list[str] = []
        i += 1
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        if i >= n:
            raise ValueError("unterminated quoted string in a challenge")
        return "".join(out), i + 1
    start = i
    while i < n and text[i] not in " \t,":
        i += 1
    return text[start:i], i


def _digest_uris(target: str) -> tuple[str, ...]:
    """The ``uri`` a Digest answer may name for ``target``: the target itself, or
    (as curl sends for an absolute-form target) its path and query."""
    if "://" not in target:
        return (target,)
    parts = urlsplit(target)
    return (target, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))


#: RFC 7616 section 6.1's algorithm names -> hashlib's.
_DIGEST_HASHES: Final = {"md5": "md5", "sha-256": "sha256", "sha-512-256": "sha512_256"}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_response(
    challenge: dict[str, str],
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The ``Digest`` credentials answering ``challenge`` (RFC 7616 section 3.4).

    Supports the MD5, SHA-256 and SHA-512-256 algorithms, their ``-sess``
    variants, ``qop=auth`` or no qop (RFC 2069 style), and ``userhash``.

    Raises:
        ValueError: no nonce or realm, an unknown algorithm, or a qop other
            than ``auth`` (``auth-int`` hashes a body; CONNECT has none, but
            a proxy offering only that is not worth a special case).
    """
    realm, nonce = challenge.get("realm"), challenge.get("nonce")
    if realm is None or nonce is None:
        raise ValueError("Digest challenge without realm or nonce")
    algorithm = challenge.get("algorithm", "MD5")
    base = algorithm.lower().removesuffix("-sess")
    hash_name = _DIGEST_HASHES.get(base)
    if hash_name is None:
        raise ValueError(f"unsupported Digest algorithm {algorithm!r}")

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode("utf-8")).hexdigest()

    qops = [q.strip().lower() for q in challenge.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise ValueError(f"unsupported Digest qop {challenge['qop']!r}")
    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.lower().endswith("-sess"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    count = f"{nc:08x}"
    if qops:
        response = h(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    else:
        response = h(f"{ha1}:{nonce}:{ha2}")
    userhash = challenge.get("userhash", "").lower() == "true"
    name = h(f"{username}:{realm}") if userhash else username
    parts = [
        f"username={_quote(name)}",
        f"realm={_quote(realm)}",
        f"uri={_quote(uri)}",
        f"algorithm={algorithm}",
        f"nonce={_quote(nonce)}",
    ]
    if qops:
        parts += [f"nc={count}", f"cnonce={_quote(cnonce)}", "qop=auth"]
    parts.append(f"response={_quote(response)}")
    if "opaque" in challenge:
        parts.append(f"opaque={_quote(challenge['opaque'])}")
    if userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# -- client ------------------------------------------------------------------

#: Every HTTP/1.x response starts so (RFC 9112 section 4, status-line).
_HTTP_PREFIX: Final = b"HTTP/"


def _status_words(status: int, reason: bytes) -> str:
    text = reason.decode("latin-1")
    text = "".join(c for c in text if c.isprintable())[:60]
    if not text:
        try:
            text = http.HTTPStatus(status).phrase
        except ValueError:
            text = "unknown status"
    return f"{status} {text}"


class HttpConnectClient(Outbox):
    """The client side of an HTTP CONNECT handshake (RFC 9110 section 9.3.6).

    The request is in ``data_to_send()`` as soon as the machine is made.
    With credentials, Basic is sent up front (as curl does) unless
    ``preemptive_basic`` is False; a 407 that challenges Digest (or Basic,
    if not yet sent) is answered once: on the same connection when the
    proxy keeps it open, else after a ``Reconnect`` event.

    Args:
        host: the target, an IP address or a host name.
        port: the target port, 1 to 65535.
        username, password: credentials for the proxy, or None.
        preemptive_basic: send Basic credentials with the first request.
        cnonce: the Digest client nonce (random when None; fixed in tests).
        max_head_size: the longest response head accepted, in bytes.

    Raises:
        SettingError: a target that cannot be written in a request line, or
            credentials that cannot be sent.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        preemptive_basic: bool = True,
        cnonce: str | None = None,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
    ) -> None:
        if not 1 <= port <= 65535:
            raise SettingError(f"target port {port} is outside 1..65535")
        try:
            host = str(ipaddress.ip_address(host)) if is_ip_literal(host) else _parse_host(host)
        except ValueError as exc:
            raise SettingError(
                f"cannot send target {host[:60]!r} to an HTTP proxy: {exc}"
            ) from None
        self.authority = format_authority(host, port)
        # RFC 7617 section 2: no colon in a user-id; no control characters in
        # either, since Digest sends them inside a quoted string.
        if username is not None and (
            ":" in username or not (username + (password or "")).isprintable()
        ):
            raise SettingError(
                "an HTTP proxy user name must not contain ':' and credentials "
                "must not contain control characters"
            )
        self._credentials = None if username is None else (username, password or "")
        self._cnonce = cnonce or secrets.token_hex(16)
        self._max_head_size = max_head_size
        self._tried: set[str] = set()
        self._authorization: bytes | None = None
        if self._credentials and preemptive_basic:
            self._authorization = _basic(*self._credentials)
            self._tried.add("basic")
        self._retry_after_body = False
        self._answered = False  # any byte from the proxy on this connection
        self._first = b""  # its first bytes, up to len(b"HTTP/")
        self._open = False
        self._outgoing = bytearray()
        self._start()

    def _start(self) -> None:
        self._answered = False
        self._first = b""
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_head_size)
        self._send_request()

    def _send_request(self) -> None:
        headers = [(b"Host", self.authority.encode("ascii"))]
        if self._authorization is not None:
            headers.append((b"Proxy-Authorization", self._authorization))
        request = h11.Request(method=b"CONNECT", target=self.authority, headers=headers)
        self._outgoing += self._conn.send(request) or b""
        self._outgoing += self._conn.send(h11.EndOfMessage()) or b""

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the proxy; ``b""`` is end of stream."""
        self._answered = self._answered or bool(data)
        if len(self._first) < len(_HTTP_PREFIX):
            self._first += data[: len(_HTTP_PREFIX) - len(self._first)]
        self._conn.receive_data(data)

    def reconnected(self) -> None:
        """After ``Reconnect``: the new connection is up; the request is queued again."""
        self._start()

    def next_event(self) -> NeedData | TunnelOpen | Reconnect:
        """``NEED_DATA``, ``TunnelOpen`` on a 2xx, or ``Reconnect`` (see the class).

        Raises:
            ProxyAuthError: 407 and no (more) credentials to try.
            ProxyRefusedError: 403, 405 or another refusal.
            ProxyTargetError: 502, 503 or 504: the proxy could not reach the target.
            ProxyProtocolError: the proxy does not speak HTTP.
        """
        if self._open:
            raise FramingError("the HTTP tunnel is already open", remote=False)
        if not _HTTP_PREFIX.startswith(self._first[: len(_HTTP_PREFIX)]):
            # Not a status line: say so now instead of waiting for a head
            # that never ends (a line-based server, a SOCKS proxy).
            raise ProxyProtocolError(
                f"the proxy does not speak HTTP: its reply starts {self._first!r}",
                protocol="HTTP",
            )
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if not self._answered:
                    raise self._closed() from None
                raise ProxyProtocolError(
                    f"the proxy does not speak HTTP: {exc}", protocol="HTTP"
                ) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                if self._retry_after_body:
                    self._retry_after_body = False
                    return Reconnect()
                raise self._closed()
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                if 200 <= event.status_code < 300:
                    self._open = True
                    data, _closed = self._conn.trailing_data
                    return TunnelOpen(None, bytes(data))
                self._on_refusal(event)
                continue
            if (
                isinstance(event, h11.EndOfMessage)
                and self._retry_after_body
                and self._conn.our_state is h11.DONE
                and self._conn.their_state is h11.DONE
            ):
                self._retry_after_body = False
                self._conn.start_next_cycle()
                self._send_request()
            # Else: a piece of the 407's body (skipped), or its end when the
            # proxy will close (Connection: close, HTTP/1.0): wait for that.

    def _closed(self) -> ProxyRefusedError:
        return ProxyRefusedError(
            f"HTTP proxy closed the connection before answering CONNECT {self.authority}",
            protocol="HTTP",
        )

    def _on_refusal(self, response: h11.Response) -> None:
        status = response.status_code
        words = _status_words(status, response.reason)
        if status == 407:
            authorization = self._answer(response)
            if authorization is None:
                raise ProxyAuthError(
                    (
                        f"HTTP proxy rejected our credentials ({words})"
                        if self._tried
                        else f"HTTP proxy requires authentication ({words})"
                    ),
                    protocol="HTTP",
                    reply=status,
                )
            self._authorization = authorization
            self._retry_after_body = True
            return
        if status in (502, 503, 504):
            raise ProxyTargetError(
                f"HTTP proxy could not reach {self.authority}: {words}",
                protocol="HTTP",
                reply=status,
            )
        raise ProxyRefusedError(
            f"HTTP proxy refused CONNECT {self.authority}: {words}",
            protocol="HTTP",
            reply=status,
        )

    def _answer(self, response: h11.Response) -> bytes | None:
        """Credentials answering the 407's challenge, or None if there is nothing to try."""
        if self._credentials is None:
            return None
        try:
            challenges = parse_challenges(_header(response.headers, b"proxy-authenticate"))
        except ValueError as exc:
            raise ProxyProtocolError(
                f"HTTP proxy sent a malformed challenge: {exc}", protocol="HTTP", reply=407
            ) from None
        username, password = self._credentials
        for scheme, params in challenges:
            # Digest once, and once more if the proxy says our nonce was
            # stale (RFC 7616 3.3): never a loop of retries.
            stale = params.get("stale", "").lower() == "true"
            attempt = "digest-stale" if stale and "digest" in self._tried else "digest"
            if scheme == "digest" and attempt not in self._tried:
                self._tried.add(attempt)
                try:
                    text = digest_response(
                        params,
                        username=username,
                        password=password,
                        method="CONNECT",
                        uri=self.authority,
                        cnonce=self._cnonce,
                    )
                except ValueError:
                    continue
                return text.encode("utf-8")
        if any(scheme == "basic" for scheme, _ in challenges) and "basic" not in self._tried:
            self._tried.add("basic")
            return _basic(username, password)
        return None


# -- server ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """Server side: a client asks the proxy to forward a plain ``http://`` request.

    Attributes:
        method: the request method, e.g. ``GET``.
        host, port: the origin server from the absolute URI (port 80 by default).
        target: the origin-form target to send it: path and query.
        headers: the end-to-end headers (hop-by-hop ones dropped), lower-case
            names; ``transfer-encoding: chunked`` is added back when the body
            has no Content-Length, so an h11 client re-frames it.
        username: the name from Proxy-Authorization, or None.
    """

    method: str
    host: str
    port: int
    target: str
    headers: Headers
    username: str | None = None


@dataclass(frozen=True, slots=True)
class RequestBody:
    """Server side: a piece of a ``ForwardRequest``'s body."""

    data: bytes


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """Server side: the ``ForwardRequest``'s body is complete."""


@dataclass(frozen=True, slots=True)
class ClientClosed:
    """Server side: the client closed between requests (a clean end of keep-alive)."""


#: TunnelFailure -> the status a proxy answers (RFC 9110 section 15).
_FAILURE_STATUS: Final = {
    TunnelFailure.GENERAL: 502,
    TunnelFailure.NOT_ALLOWED: 403,
    TunnelFailure.NETWORK_UNREACHABLE: 502,
    TunnelFailure.HOST_UNREACHABLE: 502,
    TunnelFailure.CONNECTION_REFUSED: 502,
    TunnelFailure.TTL_EXPIRED: 504,
    TunnelFailure.COMMAND_NOT_SUPPORTED: 405,
    TunnelFailure.ADDRESS_TYPE_NOT_SUPPORTED: 400,
}


class _ServerState(enum.Enum):
    REQUEST = "reading a request"
    DECIDE = "waiting for a decision"
    BODY = "reading a request body"
    RESPOND = "responding"
    OPEN = "tunnel open"
    CLOSED = "closed"


ServerEvent = (
    NeedData | TunnelRequest | ForwardRequest | RequestBody | RequestEnd | Rejected | ClientClosed
)


class HttpProxyServer(Outbox):
    """The server side of an HTTP proxy: CONNECT and absolute-URI requests, on h11.

    ``next_event()`` answers ``NEED_DATA``, then ``TunnelRequest`` (answer
    with ``accept`` or ``refuse``) or ``ForwardRequest`` followed by
    ``RequestBody``/``RequestEnd`` (answer with ``refuse`` or with
    ``send_response``, ``send_body``, ``end_response``); ``Rejected`` when
    the proxy turned the client away itself (reply queued); ``ClientClosed``
    when a keep-alive client leaves.

    Args:
        authenticate: if given, requests need ``Proxy-Authorization: Basic``
            credentials it accepts (else 407, ``realm`` in the challenge).
        forward: serve absolute-URI requests; if False they get 405.
        max_head_size: the longest request head, in bytes (else 431).
        max_body_size: the longest forwarded body, in bytes (else 413).
        digest_password: the password of a user, or None for no such user;
            if given (with ``authenticate``), Digest credentials (RFC 7616,
            MD5 or SHA-256, qop=auth) are accepted too and offered before Basic.
        digest_secret: the key of this server's Digest nonces (random if None).

    Digest nonces are ``random.HMAC(secret, random)``: any nonce this server
    made is recognised without keeping state (and without a clock, so they
    do not expire: a captured answer can be replayed for the same request
    line, as with Basic).
    """

    def __init__(
        self,
        *,
        authenticate: Authenticate | None = None,
        realm: str = "socketkit",
        forward: bool = True,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        digest_password: Callable[[str], str | None] | None = None,
        digest_secret: bytes | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._digest_password = digest_password
        self._digest_secret = digest_secret or secrets.token_bytes(32)
        self._realm = realm
        self._forward = forward
        self._max_body_size = max_body_size
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._outgoing = bytearray()
        self._eof = False
        self._state = _ServerState.REQUEST
        self._body_size = 0
        self._pending: TunnelRequest | None = None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the client; ``b""`` is end of stream."""
        self._eof = self._eof or not data
        self._conn.receive_data(data)

    def next_event(self) -> ServerEvent:
        """The next thing the client said (see the class docstring).

        Raises:
            ProxyRequestError: a malformed request; a 400 or 431 is queued.
            IncompleteReadError: the client closed in the middle of a request.
        """
        if self._state not in (_ServerState.REQUEST, _ServerState.BODY):
            raise ProxyRequestError(
                f"no HTTP event to read while {self._state.value}", remote=False
            )
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self._eof:
                    # h11 calls a request cut short a protocol error; for the
                    # log it is a client that left (nobody to answer).
                    self._state = _ServerState.CLOSED
                    raise IncompleteReadError(
                        "HTTP proxy client closed the connection in the middle of a request",
                        partial=b"",
                    ) from None
                self._error_response(exc.error_status_hint, str(exc))
                raise ProxyRequestError(f"bad HTTP proxy request: {exc}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return NEED_DATA
            if isinstance(event, h11.ConnectionClosed):
                self._state = _ServerState.CLOSED
                return ClientClosed()
            if isinstance(event, h11.Request):
                answer = self._on_request(event)
                if isinstance(answer, TunnelRequest):
                    # Handed out at the request's end: h11 switches to the
                    # tunnel only once it has seen the whole CONNECT.
                    self._pending = answer
                    continue
                return answer
            if self._pending is not None:
                if isinstance(event, h11.EndOfMessage):
                    answer, self._pending = self._pending, None
                    self._state = _ServerState.DECIDE
                    return answer
                continue  # a body on a CONNECT means nothing (RFC 9110 9.3.6)
            if isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > self._max_body_size:
                    return self._reject(413, f"request body over {self._max_body_size} bytes")
                return RequestBody(bytes(event.data))
            if isinstance(event, h11.EndOfMessage):
                self._state = _ServerState.RESPOND
                return RequestEnd()
            raise AssertionError(f"unexpected h11 event {event!r}")  # pragma: no cover

    @property
    def closed(self) -> bool:
        """True once the connection must close (a refusal, or no keep-alive)."""
        return self._state is _ServerState.CLOSED

    # -- answers -----------------------------------------------------------

    def accept(self, bound: tuple[str, int] | None = None) -> None:
        """Grant the ``TunnelRequest``: queue ``200 Connection established``.

        Args:
            bound: taken for the same call shape as ``SocksServer.accept``;
                HTTP has no field for it, so it is not sent.
        """
        self._expect(_ServerState.DECIDE, "a CONNECT to answer")
        self._outgoing += (
            self._conn.send(
                h11.Response(status_code=200, headers=[], reason=b"Connection established")
            )
            or b""
        )
        self._state = _ServerState.OPEN

    @property
    def trailing_data(self) -> bytes:
        """After ``accept``: bytes the client sent after its CONNECT (tunnel data)."""
        self._expect(_ServerState.OPEN, "an open tunnel")
        return bytes(self._conn.trailing_data[0])

    def refuse(self, failure: TunnelFailure) -> None:
        """Turn down the ``TunnelRequest`` or ``ForwardRequest``: queue the status; then close."""
        if self._state not in (_ServerState.DECIDE, _ServerState.BODY, _ServerState.RESPOND):
            self._expect(_ServerState.DECIDE, "a request to answer")
        status = _FAILURE_STATUS[failure]
        self._error_response(status, failure.name.lower().replace("_", " "))

    def send_response(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], reason: bytes = b""
    ) -> None:
        """Queue the head of the origin's response to a ``ForwardRequest``.

        Hop-by-hop headers are dropped; h11 frames the body for this client
        (Content-Length if the origin gave one, else chunked or close).
        """
        if self._state not in (_ServerState.BODY, _ServerState.RESPOND):
            self._expect(_ServerState.RESPOND, "a forwarded request to answer")
        response = h11.Response(
            status_code=status, headers=end_to_end_headers(headers), reason=reason
        )
        self._outgoing += self._conn.send(response) or b""

    def send_body(self, data: bytes) -> None:
        """Queue a piece of the origin's response body."""
        self._outgoing += self._conn.send(h11.Data(data=data)) or b""

    def end_response(self) -> None:
        """Queue the end of the response; then read the client's next request."""
        self._outgoing += self._conn.send(h11.EndOfMessage()) or b""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            self._state = _ServerState.REQUEST
            self._body_size = 0
        else:
            self._state = _ServerState.CLOSED

    # -- internals ---------------------------------------------------------

    def _expect(self, state: _ServerState, what: str) -> None:
        if self._state is not state:
            raise ProxyRequestError(f"no {what} while {self._state.value}", remote=False)

    def _error_response(self, status: int, text: str, headers: Headers | None = None) -> None:
        body = f"{_status_words(status, b'')}: {text}\n".encode()
        all_headers = [
            *(headers or []),
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", str(len(body)).encode()),
            (b"Connection", b"close"),
        ]
        self._state = _ServerState.CLOSED
        try:
            self._outgoing += (
                self._conn.send(
                    h11.Response(
                        status_code=status,
                        headers=all_headers,
                        reason=http.HTTPStatus(status).phrase.encode(),
                    )
                )
                or b""
            )
            self._outgoing += self._conn.send(h11.Data(data=body)) or b""
            self._outgoing += self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            # A response was already under way (or the head was too broken
            # to answer): nothing more can be said, only closed.
            pass

    def _reject(self, status: int, reason: str, headers: Headers | None = None) -> Rejected:
        self._error_response(status, reason, headers)
        return Rejected(f"HTTP {status}: {reason}")

    def _bad_request(self, text: str) -> ProxyRequestError:
        self._error_response(400, text)
        return ProxyRequestError(f"bad HTTP proxy request: {text}")

    def _nonce_mac(self, salt: str) -> str:
        return hmac.new(self._digest_secret, salt.encode(), hashlib.sha256).hexdigest()[:32]

    def _new_nonce(self) -> str:
        salt = secrets.token_hex(16)
        return f"{salt}.{self._nonce_mac(salt)}"

    def _challenges(self) -> Headers:
        realm = _quote(self._realm)
        headers: Headers = []
        if self._digest_password is not None:
            nonce = _quote(self._new_nonce())
            # MD5 first: ncat 7.93 answers the first Digest challenge and
            # knows only MD5; curl takes either.
            for algorithm in ("MD5", "SHA-256"):
                headers.append(
                    (
                        b"Proxy-Authenticate",
                        f'Digest realm={realm}, qop="auth", algorithm={algorithm}, '
                        f"nonce={nonce}".encode(),
                    )
                )
        headers.append((b"Proxy-Authenticate", f'Basic realm={realm}, charset="UTF-8"'.encode()))
        return headers

    def _check_digest(self, request: h11.Request, value: bytes) -> tuple[bool, str | None]:
        """Digest credentials (RFC 7616 section 3.4) against ``digest_password``."""
        assert self._digest_password is not None
        try:
            params = parse_challenges([value])[0][1]
        except (ValueError, IndexError):
            return False, None
        user, nonce = params.get("username"), params.get("nonce", "")
        salt, _, mac = nonce.partition(".")
        if (
            user is None
            or params.get("realm") != self._realm
            or params.get("uri") not in _digest_uris(request.target.decode("ascii"))
            or not hmac.compare_digest(mac, self._nonce_mac(salt))
        ):
            return False, user
        password = self._digest_password(user)
        if password is None:
            return False, user
        try:
            expected = digest_response(
                {
                    "realm": self._realm,
                    "nonce": nonce,
                    "qop": params.get("qop", ""),
                    "algorithm": params.get("algorithm", "MD5"),
                },
                username=user,
                password=password,
                method=request.method.decode("ascii"),
                uri=params["uri"],
                cnonce=params.get("cnonce", ""),
                nc=int(params.get("nc", "1"), 16),
            )
        except ValueError:
            return False, user
        wanted = parse_challenges([expected.encode()])[0][1]["response"]
        return hmac.compare_digest(wanted, params.get("response", "")), user

    def _check_auth(self, request: h11.Request) -> tuple[bool, str | None]:
        if self._authenticate is None:
            return True, None
        for value in _header(request.headers, b"proxy-authorization"):
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"digest" and self._digest_password is not None:
                return self._check_digest(request, value)
            if scheme.lower() != b"basic":
                continue
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False, None
            user, sep, password = decoded.partition(":")
            if sep and self._authenticate(user, password):
                return True, user
            return False, user
        return False, None

    def _on_request(self, request: h11.Request) -> TunnelRequest | ForwardRequest | Rejected:
        # h11 let through only a token and visible ASCII (RFC 9112 section 3).
        method = request.method.decode("ascii")
        target = request.target.decode("ascii")
        connect = method == "CONNECT"
        if connect:
            try:
                host, port = _parse_authority(target)
            except ValueError as exc:
                raise self._bad_request(str(exc)) from None
        else:
            parts = urlsplit(target)
            if parts.scheme.lower() != "http" or not parts.netloc:
                if not target.startswith("/"):
                    raise self._bad_request(f"target {target[:60]!r} is not http://host/...")
                raise self._bad_request(
                    "this is a proxy: ask for an absolute http:// URI, or CONNECT host:port"
                )
            if not self._forward:
                return self._reject(405, f"{method} is not proxied here", [(b"Allow", b"CONNECT")])
            try:
                host, port = _parse_uri_authority(parts.netloc)
            except ValueError as exc:
                raise self._bad_request(str(exc)) from None
        allowed, user = self._check_auth(request)
        if not allowed:
            words = "credentials missing" if user is None else f"wrong credentials for {user!r}"
            return self._reject(407, words, self._challenges())
        if connect:
            return TunnelRequest(ProxyKind.HTTP, host, port, user)
        lengths = _header(request.headers, b"content-length")
        if lengths and int(lengths[0]) > self._max_body_size:
            return self._reject(413, f"request body over {self._max_body_size} bytes")
        headers = end_to_end_headers(request.headers)
        if _header(request.headers, b"transfer-encoding"):
            headers.append((b"transfer-encoding", b"chunked"))
        origin_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._state = _ServerState.BODY
        self._body_size = 0
        return ForwardRequest(method, host, port, origin_target, headers, user)
