"""SOCKS4, SOCKS4a and SOCKS5 machines: exact bytes, splits, failures, fuzz.

Vectors: the bytes ncat 7.93 sends (tests/proxyserver.py, checked against
ncat itself by tests/interop/test_proxy_ncat.py) and the layouts of RFC 1928
and RFC 1929. Opens no socket.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyserver import (
    NCAT_SOCKS4_IP,
    NCAT_SOCKS4_USER,
    NCAT_SOCKS4A,
    NCAT_SOCKS5_GREETING,
    NCAT_SOCKS5_GREETING_AUTH,
    RFC1929_ALICE,
    SOCKS5_CONNECT_NAME,
    SOCKS5_CONNECT_V4,
    SOCKS5_CONNECT_V6,
)
from socketkit.errors import (
    FramingError,
    IncompleteReadError,
    ProxyAuthError,
    ProxyError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTargetError,
    SettingError,
)
from socketkit.framing.socks import SocksClient, SocksServer
from socketkit.framing.tunnel import (
    NEED_DATA,
    ProxyKind,
    ProxyRequestError,
    Rejected,
    TunnelFailure,
    TunnelOpen,
    TunnelRequest,
)

PROPERTY = settings(max_examples=200, deadline=None)

SOCKS5_OK = b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\x92"  # bound 10.0.0.1:4242


def _check(user: str, password: str) -> bool:
    return (user, password) == ("alice", "s3cret")


def feed_server(server: SocksServer, data: bytes) -> object:
    server.receive_data(data)
    return server.next_event()


def drive_server(data: bytes, *, step: int | None = None, **kwargs: object) -> tuple[object, bytes]:
    """Feed ``data`` (whole, or ``step`` bytes at a time); the first event and all replies."""
    server = SocksServer(**kwargs)  # type: ignore[arg-type]
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    replies = b""
    for chunk in chunks:
        server.receive_data(chunk)
        event = server.next_event()
        replies += server.data_to_send()
        if event is not NEED_DATA:
            return event, replies
    return NEED_DATA, replies


# -- client: exact bytes ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((4, "127.0.0.1", 80, {}), NCAT_SOCKS4_IP),
        ((4, "127.0.0.1", 80, {"username": "alice"}), NCAT_SOCKS4_USER),
        ((4, "example.com", 80, {}), NCAT_SOCKS4A),
        ((5, "example.com", 80, {}), NCAT_SOCKS5_GREETING),
        (
            (5, "example.com", 80, {"username": "alice", "password": "s3cret"}),
            NCAT_SOCKS5_GREETING_AUTH,
        ),
    ],
)
def test_client_first_bytes_match_ncat(args: tuple, expected: bytes) -> None:  # type: ignore[type-arg]
    version, host, port, kwargs = args
    assert SocksClient(version, host, port, **kwargs).data_to_send() == expected


@pytest.mark.parametrize(
    ("host", "request_bytes"),
    [
        ("example.com", SOCKS5_CONNECT_NAME),
        ("127.0.0.1", SOCKS5_CONNECT_V4),
        ("::1", SOCKS5_CONNECT_V6),
    ],
)
def test_socks5_client_whole_exchange(host: str, request_bytes: bytes) -> None:
    client = SocksClient(5, host, 80, username="alice", password="s3cret")
    assert client.data_to_send() == NCAT_SOCKS5_GREETING_AUTH
    assert client.next_event() is NEED_DATA
    client.receive_data(b"\x05\x02")
    assert client.next_event() is NEED_DATA
    assert client.data_to_send() == RFC1929_ALICE
    client.receive_data(b"\x01\x00")
    assert client.next_event() is NEED_DATA
    assert client.data_to_send() == request_bytes
    client.receive_data(SOCKS5_OK + b"Hello from server")
    assert client.next_event() == TunnelOpen(("10.0.0.1", 4242), b"Hello from server")


def test_socks5_client_byte_by_byte_with_domain_bound_address() -> None:
    client = SocksClient(5, "example.com", 80)
    client.data_to_send()
    reply = b"\x05\x00" + b"\x05\x00\x00\x03\x05proxy\x01\xbb" + b"tail"
    events = []
    for byte in reply:
        client.receive_data(bytes([byte]))
        events.append(client.next_event())
        if events[-1] is not NEED_DATA:
            break
    assert events[-1] == TunnelOpen(("proxy", 443), b"")
    assert all(e is NEED_DATA for e in events[:-1])
    assert client.data_to_send() == SOCKS5_CONNECT_NAME


def test_socks4_client_granted_with_trailing_and_unspecified_bound() -> None:
    client = SocksClient(4, "example.com", 80)
    client.data_to_send()
    client.receive_data(b"\x00\x5a\x00\x00\x00\x00\x00\x00abc")
    assert client.next_event() == TunnelOpen(None, b"abc")


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (b"\x05\x01", ProxyRefusedError, "general SOCKS server failure (reply 1)"),
        (b"\x05\x02", ProxyRefusedError, "connection not allowed by ruleset (reply 2)"),
        (b"\x05\x03", ProxyTargetError, "network unreachable (reply 3)"),
        (b"\x05\x04", ProxyTargetError, "host unreachable (reply 4)"),
        (b"\x05\x05", ProxyTargetError, "connection refused (reply 5)"),
        (b"\x05\x06", ProxyTargetError, "TTL expired (reply 6)"),
        (b"\x05\x07", ProxyRefusedError, "command not supported (reply 7)"),
        (b"\x05\x08", ProxyRefusedError, "address type not supported (reply 8)"),
        (b"\x05\x09", ProxyRefusedError, "unassigned reply code 0x09"),
        (b"HTTP/1.1 400 Bad Request\r\n", ProxyProtocolError, "does not speak SOCKS5"),
        (b"\x05\x00\x00\x07", ProxyProtocolError, "unknown address type 7"),
        (b"\x05\x00\x01\x01" + bytes(6), ProxyProtocolError, "reserved byte"),
        (b"\x05\x00\x00\x03\x00\x00\x00", ProxyProtocolError, "malformed bound address"),
    ],
)
def test_socks5_client_reply_errors(reply: bytes, error: type[ProxyError], words: str) -> None:
    client = SocksClient(5, "example.com", 80)
    client.receive_data(b"\x05\x00" + reply)
    with pytest.raises(error, match=re.escape(words)) as info:
        client.next_event()
    assert "\n" not in str(info.value)
    assert info.value.protocol == "SOCKS5"


@pytest.mark.parametrize(
    ("code", "error"), [(91, ProxyRefusedError), (92, ProxyAuthError), (93, ProxyAuthError)]
)
def test_socks4_client_reply_errors(code: int, error: type[ProxyError]) -> None:
    client = SocksClient(4, "127.0.0.1", 80)
    client.receive_data(bytes([0, code]) + bytes(6))
    with pytest.raises(error, match=f"reply {code}") as info:
        client.next_event()
    assert info.value.reply == code


def test_socks4_client_rejects_other_versions_and_codes() -> None:
    for reply in (b"\x04\x5a" + bytes(6), b"\x00\x10" + bytes(6)):
        client = SocksClient(4, "127.0.0.1", 80)
        client.receive_data(reply)
        with pytest.raises(ProxyProtocolError):
            client.next_event()


def test_socks5_client_auth_failures() -> None:
    client = SocksClient(5, "h", 1)
    client.receive_data(b"\x05\xff")
    with pytest.raises(ProxyAuthError, match="none of our authentication methods"):
        client.next_event()
    client = SocksClient(5, "h", 1)
    client.receive_data(b"\x05\x02")  # username/password, never offered
    with pytest.raises(ProxyProtocolError, match="did not offer"):
        client.next_event()
    client = SocksClient(5, "h", 1, username="alice", password="bad")
    client.receive_data(b"\x05\x02\x01\x01")
    with pytest.raises(ProxyAuthError, match="rejected the username and password"):
        client.next_event()


def test_client_end_of_stream_mid_handshake() -> None:
    client = SocksClient(5, "h", 1)
    client.receive_data(b"\x05")
    client.receive_data(b"")
    with pytest.raises(ProxyRefusedError, match="closed the connection"):
        client.next_event()


@pytest.mark.parametrize(
    ("version", "host", "kwargs"),
    [
        (4, "::1", {}),
        (4, "0.0.0.1", {}),
        (4, "h", {"password": "x"}),
        (5, "bad host", {}),
        (5, "h", {"username": ""}),
        (5, "h", {"username": "u" * 256}),
        (5, "x" * 256, {}),
        (6, "h", {}),
    ],
)
def test_client_usage_errors(version: Literal[4, 5], host: str, kwargs: dict[str, str]) -> None:
    with pytest.raises(SettingError):
        SocksClient(version, host, 80, **kwargs)  # type: ignore[arg-type]


def test_client_rejects_port_zero() -> None:
    with pytest.raises(SettingError):
        SocksClient(5, "h", 0)


# -- server: what ncat sends parses -------------------------------------------


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (NCAT_SOCKS4_IP, TunnelRequest(ProxyKind.SOCKS4, "127.0.0.1", 80, None)),
        (NCAT_SOCKS4_USER, TunnelRequest(ProxyKind.SOCKS4, "127.0.0.1", 80, "alice")),
        (NCAT_SOCKS4A, TunnelRequest(ProxyKind.SOCKS4, "example.com", 80, None)),
        (
            NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_NAME,
            TunnelRequest(ProxyKind.SOCKS5, "example.com", 80),
        ),
        (
            NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_V4,
            TunnelRequest(ProxyKind.SOCKS5, "127.0.0.1", 80),
        ),
        (NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_V6, TunnelRequest(ProxyKind.SOCKS5, "::1", 80)),
    ],
)
def test_server_parses_requests_whole_and_split(
    data: bytes, expected: TunnelRequest, step: int | None
) -> None:
    event, replies = drive_server(data, step=step)
    assert event == expected
    assert replies == (b"\x05\x00" if data[0] == 5 else b"")


def test_server_accept_reply_and_trailing_data() -> None:
    server = SocksServer()
    assert feed_server(server, NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_V4 + b"early") is not NEED_DATA
    assert server.data_to_send() == b"\x05\x00"
    server.accept(("10.0.0.1", 4242))
    assert server.data_to_send() == SOCKS5_OK
    assert server.trailing_data == b"early"
    server = SocksServer()
    feed_server(server, NCAT_SOCKS4A + b"x")
    server.accept(("::1", 5))  # SOCKS4 cannot say IPv6: 0.0.0.0
    assert server.data_to_send() == b"\x00\x5a\x00\x05\x00\x00\x00\x00"
    assert server.trailing_data == b"x"


def test_server_with_password_authentication() -> None:
    server = SocksServer(authenticate=_check)
    assert feed_server(server, NCAT_SOCKS5_GREETING_AUTH) is NEED_DATA
    assert server.data_to_send() == b"\x05\x02"
    assert feed_server(server, RFC1929_ALICE) is NEED_DATA
    assert server.data_to_send() == b"\x01\x00"
    assert feed_server(server, SOCKS5_CONNECT_NAME) == TunnelRequest(
        ProxyKind.SOCKS5, "example.com", 80, "alice"
    )


@pytest.mark.parametrize(
    ("data", "reply", "reason"),
    [
        (NCAT_SOCKS5_GREETING, b"\x05\xff", "does not offer username/password"),
        (
            NCAT_SOCKS5_GREETING_AUTH + b"\x01\x05alice\x03bad",
            b"\x05\x02\x01\x01",
            "authentication failed",
        ),
        (NCAT_SOCKS4_USER, b"\x00\x5b" + bytes(6), "SOCKS4 carries no password"),
    ],
)
def test_server_auth_rejections(data: bytes, reply: bytes, reason: str) -> None:
    event, replies = drive_server(data, authenticate=_check)
    assert isinstance(event, Rejected)
    assert reason in event.reason
    assert replies == reply


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"\x05\x01\x02", b"\x05\xff"),  # no "no authentication" offered
        (
            b"\x05\x01\x00\x05\x02\x00\x01" + bytes(6),
            b"\x05\x00\x05\x07\x00\x01" + bytes(6),
        ),  # BIND
        (b"\x05\x01\x00\x05\x03\x00\x01" + bytes(6), b"\x05\x00\x05\x07\x00\x01" + bytes(6)),  # UDP
        (b"\x05\x01\x00\x05\x01\x00\x09", b"\x05\x00\x05\x08\x00\x01" + bytes(6)),  # ATYP 9
        (b"\x04\x02\x00P\x7f\x00\x00\x01\x00", b"\x00\x5b" + bytes(6)),  # SOCKS4 BIND
    ],
)
def test_server_unsupported_requests(data: bytes, reply: bytes) -> None:
    event, replies = drive_server(data)
    assert isinstance(event, Rejected)
    assert replies == reply


@pytest.mark.parametrize(("failure", "code"), [(f, f.value) for f in TunnelFailure])
def test_server_refusals_carry_rfc1928_codes(failure: TunnelFailure, code: int) -> None:
    server = SocksServer()
    feed_server(server, NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_NAME)
    server.data_to_send()
    server.refuse(failure)
    assert server.data_to_send() == bytes([5, code, 0, 1]) + bytes(6)
    server = SocksServer()
    feed_server(server, NCAT_SOCKS4_IP)
    server.refuse(failure)
    assert server.data_to_send() == b"\x00\x5b" + bytes(6)


@pytest.mark.parametrize(
    "data",
    [
        b"\x06",
        b"GET / HTTP/1.1\r\n",
        b"\x05\x00",  # no methods
        b"\x05\x01\x00\x05\x01\x01\x01" + bytes(6),  # RSV not 0
        b"\x05\x01\x00\x04\x01\x00\x01" + bytes(6),  # request version 4
        b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50",  # empty domain
        b"\x05\x01\x00\x05\x01\x00\x03\x03a b\x00\x50",  # bad domain
        b"\x05\x01\x00\x05\x01\x00\x01\x01\x02\x03\x04\x00\x00",  # port 0
        b"\x04\x01\x00\x00\x7f\x00\x00\x01\x00",  # SOCKS4 port 0
        b"\x04\x01\x00P\x00\x00\x00\x00\x00",  # SOCKS4 0.0.0.0
        b"\x04\x07\x00P\x7f\x00\x00\x01\x00",  # unknown command
        b"\x04\x01\x00P\x7f\x00\x00\x01" + b"u" * 256,  # endless user id
        b"\x04\x01\x00P\x00\x00\x00\x01\x00" + b"h" * 256,  # endless 4a name
        b"\x05\x02\x00\x02\x02\x05alice\x06s3cret",  # RFC 1929 version 2
    ],
)
def test_server_malformed_raises_framing_error(data: bytes) -> None:
    server = SocksServer(authenticate=_check if data.startswith(b"\x05\x02") else None)
    with pytest.raises(ProxyRequestError):
        for byte in data:
            feed_server(server, bytes([byte]))
    assert isinstance(ProxyRequestError("x"), FramingError)


def test_server_end_of_stream_mid_request() -> None:
    server = SocksServer()
    server.receive_data(b"\x05\x01")
    server.receive_data(b"")
    with pytest.raises(IncompleteReadError):
        server.next_event()


def test_server_refuses_calls_out_of_order() -> None:
    server = SocksServer()
    with pytest.raises(FramingError):
        server.accept()
    feed_server(server, NCAT_SOCKS4_IP)
    with pytest.raises(FramingError):
        server.next_event()
    server.accept()
    with pytest.raises(FramingError):
        server.refuse(TunnelFailure.GENERAL)


# -- client against server ----------------------------------------------------


def handshake(client: SocksClient, server: SocksServer, bound: tuple[str, int]) -> tuple[Any, Any]:
    for _ in range(5):
        server.receive_data(client.data_to_send())
        event = server.next_event()
        if isinstance(event, TunnelRequest):
            server.accept(bound)
        client.receive_data(server.data_to_send())
        result = client.next_event()
        if result is not NEED_DATA:
            return event, result
    raise AssertionError("no tunnel after 5 rounds")


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{1,10}){0,3}", fullmatch=True),
)


@PROPERTY
@given(host=hosts, port=st.integers(1, 65535), version=st.sampled_from([4, 5]), auth=st.booleans())
def test_client_and_server_agree(host: str, port: int, version: Literal[4, 5], auth: bool) -> None:
    if version == 4 and (":" in host or host.startswith("0.0.0.")):
        return  # SOCKS4 cannot say these (a SettingError, tested above)
    kwargs = {"username": "alice", "password": "s3cret"} if auth and version == 5 else {}
    client = SocksClient(version, host, port, **kwargs)
    server = SocksServer(authenticate=_check if kwargs else None)
    request, opened = handshake(client, server, ("192.0.2.1", 1080))
    assert (request.host, request.port) == (host.lower() if ":" not in host else host, port)
    assert opened == TunnelOpen(("192.0.2.1", 1080), b"")


# -- fuzz ---------------------------------------------------------------------


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@PROPERTY
@given(
    data=st.sampled_from(
        [NCAT_SOCKS4_IP, NCAT_SOCKS4_USER, NCAT_SOCKS4A, NCAT_SOCKS5_GREETING + SOCKS5_CONNECT_V6]
    ),
    cuts=st.lists(st.integers(0, 100), max_size=10),
    tail=st.binary(max_size=20),
)
def test_server_any_split_parses_the_same(data: bytes, cuts: list[int], tail: bytes) -> None:
    whole, _ = drive_server(data)
    server = SocksServer()
    event: object = NEED_DATA
    for chunk in _split(data + tail, cuts):
        server.receive_data(chunk)
        if event is NEED_DATA:
            event = server.next_event()
    if event is NEED_DATA:
        event = server.next_event()
    assert event == whole
    server.accept()
    assert server.trailing_data == tail


@PROPERTY
@given(data=st.binary(max_size=600), step=st.integers(1, 64), auth=st.booleans())
def test_server_arbitrary_bytes_wait_decode_or_framing_error(
    data: bytes, step: int, auth: bool
) -> None:
    server = SocksServer(authenticate=_check if auth else None)
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
            event = server.next_event()
            if event is not NEED_DATA:
                break
            # Memory bound: an unfinished handshake never holds more than
            # one SOCKS5 request (262 bytes) or a SOCKS4a one (8 + 2 * 256).
            assert len(server._buffer) <= 8 + 2 * 256 + step
    except FramingError:
        pass


@PROPERTY
@given(
    data=st.binary(max_size=300),
    step=st.integers(1, 64),
    version=st.sampled_from([4, 5]),
    auth=st.booleans(),
)
def test_client_arbitrary_replies_wait_open_or_proxy_error(
    data: bytes, step: int, version: Literal[4, 5], auth: bool
) -> None:
    kwargs = {"username": "alice", "password": "s3cret"} if auth and version == 5 else {}
    client = SocksClient(version, "example.com", 80, **kwargs)
    try:
        for i in range(0, len(data), step):
            client.receive_data(data[i : i + step])
            if isinstance(client.next_event(), TunnelOpen):
                break
    except ProxyError:
        pass


def test_server_reports_non_utf8_names_as_escapes() -> None:
    event, _ = drive_server(b"\x04\x01\x00P\x7f\x00\x00\x01a\xff\x00")
    assert isinstance(event, TunnelRequest)
    assert event.username == "a\\xff"


@PROPERTY
@given(
    version=st.sampled_from([4, 5]),
    auth=st.booleans(),
    cuts=st.lists(st.integers(0, 100), max_size=10),
    tail=st.binary(max_size=20),
)
def test_client_any_split_of_the_replies_opens_the_same_tunnel(
    version: Literal[4, 5], auth: bool, cuts: list[int], tail: bytes
) -> None:
    if version == 4:
        kwargs: dict[str, str] = {}
        replies = b"\x00\x5a\x10\x92\x0a\x00\x00\x01"
    else:
        kwargs = {"username": "alice", "password": "s3cret"} if auth else {}
        replies = (b"\x05\x02\x01\x00" if auth else b"\x05\x00") + SOCKS5_OK
    client = SocksClient(version, "example.com", 80, **kwargs)
    event: object = NEED_DATA
    after = b""
    for chunk in _split(replies + tail, cuts):
        if event is NEED_DATA:
            client.receive_data(chunk)
            event = client.next_event()
        else:
            after += chunk  # the tunnel's, read from the connection by then
    assert isinstance(event, TunnelOpen)
    assert event.bound == ("10.0.0.1", 4242)
    assert event.trailing_data + after == tail
