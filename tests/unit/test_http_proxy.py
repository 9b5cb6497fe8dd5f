"""HTTP CONNECT client and HTTP proxy server machines, Digest, tunnel helpers.

Vectors: what ncat 7.93 sends as an HTTP proxy client, RFC 7616 section
3.9.1's Digest example, and RFC 9110's status codes. Opens no socket.
"""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyserver import NCAT_CONNECT, NCAT_CONNECT_V6
from socketkit.errors import (
    AddressError,
    FramingError,
    IncompleteReadError,
    ProxyAuthError,
    ProxyError,
    ProxyProtocolError,
    ProxyRefusedError,
    ProxyTargetError,
    SettingError,
)
from socketkit.framing.http_proxy import (
    ClientClosed,
    ForwardRequest,
    HttpConnectClient,
    HttpProxyServer,
    RequestBody,
    RequestEnd,
    digest_response,
    end_to_end_headers,
    parse_challenges,
)
from socketkit.framing.tunnel import (
    NEED_DATA,
    ProxyKind,
    ProxyRequestError,
    Reconnect,
    Rejected,
    TargetPlan,
    TunnelFailure,
    TunnelOpen,
    TunnelRequest,
    detect_proxy_protocol,
    failure_for_errno,
    plan_target,
)

PROPERTY = settings(max_examples=200, deadline=None)

CURL_CONNECT = (
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
    b"User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n"
)


def _check(user: str, password: str) -> bool:
    return (user, password) == ("alice", "s3cret")


def first_event(data: bytes, **kwargs: object) -> tuple[object, bytes, HttpProxyServer]:
    server = HttpProxyServer(**kwargs)  # type: ignore[arg-type]
    server.receive_data(data)
    event = server.next_event()
    return event, server.data_to_send(), server


# -- server -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "host", "port"),
    [
        (NCAT_CONNECT, "example.com", 80),
        (NCAT_CONNECT_V6, "::1", 80),
        (CURL_CONNECT, "example.com", 443),
    ],
)
def test_server_connect_whole_and_byte_by_byte(data: bytes, host: str, port: int) -> None:
    expected = TunnelRequest(ProxyKind.HTTP, host, port, None)
    assert first_event(data + b"tail")[0] == expected
    server = HttpProxyServer()
    events = []
    for byte in data:
        server.receive_data(bytes([byte]))
        events.append(server.next_event())
    assert events[-1] == expected
    assert all(e is NEED_DATA for e in events[:-1])
    server.receive_data(b"early")
    server.accept()
    assert server.data_to_send().startswith(b"HTTP/1.1 200 Connection established\r\n")
    assert server.trailing_data == b"early"


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (TunnelFailure.NOT_ALLOWED, b"403 Forbidden"),
        (TunnelFailure.CONNECTION_REFUSED, b"502 Bad Gateway"),
        (TunnelFailure.HOST_UNREACHABLE, b"502 Bad Gateway"),
        (TunnelFailure.TTL_EXPIRED, b"504 Gateway Timeout"),
        (TunnelFailure.COMMAND_NOT_SUPPORTED, b"405 Method Not Allowed"),
    ],
)
def test_server_refusals(failure: TunnelFailure, status: bytes) -> None:
    _, _, server = first_event(CURL_CONNECT)
    server.refuse(failure)
    reply = server.data_to_send()
    assert reply.startswith(b"HTTP/1.1 " + status + b"\r\n")
    assert b"connection: close\r\n" in reply.lower()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # no port
        (b"CONNECT example.com:0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT example.com:99999 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT ::1:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # IPv6 without brackets
        (b"CONNECT [1.2.3.4]:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT a..b:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # origin-form: not a proxy request
        (b"GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT x:80 HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (h11)
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", 400),
        (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n" + b"A: " + b"a" * 20000, 431),  # unfinished
    ],
)
def test_server_malformed_requests(data: bytes, status: int) -> None:
    server = HttpProxyServer()
    server.receive_data(data)
    with pytest.raises(ProxyRequestError):
        server.next_event()
    reply = server.data_to_send()
    assert reply.startswith(b"HTTP/1.1 %d " % status)


def test_server_authentication() -> None:
    event, reply, _ = first_event(CURL_CONNECT, authenticate=_check)
    assert isinstance(event, Rejected)
    assert reply.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'Proxy-Authenticate: Basic realm="socketkit"' in reply
    good = CURL_CONNECT.replace(
        b"\r\n\r\n", b"\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
    )
    event, _, _ = first_event(good, authenticate=_check)
    assert event == TunnelRequest(ProxyKind.HTTP, "example.com", 443, "alice")
    for credentials in (b"Basic YWxpY2U6YmFk", b"Basic !!!", b"Digest x=1"):
        bad = CURL_CONNECT.replace(
            b"\r\n\r\n", b"\r\nProxy-Authorization: " + credentials + b"\r\n\r\n"
        )
        event, reply, _ = first_event(bad, authenticate=_check)
        assert isinstance(event, Rejected)
        assert b" 407 " in reply


def test_server_forward_request_with_chunked_body_and_keep_alive() -> None:
    request = (
        b"POST http://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nProxy-Connection: keep-alive\r\n"
        b"Transfer-Encoding: chunked\r\nAccept: */*\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    event, _, server = first_event(request)
    assert event == ForwardRequest(
        "POST",
        "example.com",
        8080,
        "/a/b?c=d",
        [(b"host", b"example.com:8080"), (b"accept", b"*/*"), (b"transfer-encoding", b"chunked")],
    )
    assert server.next_event() == RequestBody(b"abc")
    assert server.next_event() == RequestEnd()
    server.send_response(200, [(b"Content-Length", b"2"), (b"Keep-Alive", b"timeout=5")], b"OK")
    server.send_body(b"hi")
    server.end_response()
    assert server.data_to_send() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    server.receive_data(b"GET http://[::1]/ HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 0\r\n\r\n")
    assert server.next_event() == ForwardRequest(
        "GET", "::1", 80, "/", [(b"host", b"[::1]"), (b"content-length", b"0")]
    )
    assert server.next_event() == RequestEnd()
    server.refuse(TunnelFailure.TTL_EXPIRED)
    assert server.data_to_send().startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")


def test_server_body_limits_and_method_policy() -> None:
    big = b"POST http://x/ HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
    event, reply, _ = first_event(big, max_body_size=10)
    assert isinstance(event, Rejected)
    assert reply.startswith(b"HTTP/1.1 413 ")
    chunked = b"POST http://x/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n01234567890\r\n"
    event, _, server = first_event(chunked, max_body_size=10)
    assert isinstance(event, ForwardRequest)
    assert isinstance(server.next_event(), Rejected)
    assert server.data_to_send().startswith(b"HTTP/1.1 413 ")
    event, reply, _ = first_event(b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", forward=False)
    assert isinstance(event, Rejected)
    assert reply.startswith(b"HTTP/1.1 405 ")
    assert b"Allow: CONNECT\r\n" in reply


def test_server_client_closes() -> None:
    server = HttpProxyServer()
    server.receive_data(b"")
    assert server.next_event() == ClientClosed()
    server = HttpProxyServer()
    server.receive_data(b"CONNECT x:1 HTTP/1.1\r\n")
    server.receive_data(b"")
    with pytest.raises(IncompleteReadError, match="in the middle of a request"):
        server.next_event()
    assert server.data_to_send() == b""


def test_end_to_end_headers() -> None:
    headers = [
        (b"Connection", b"close, X-A"),
        (b"X-A", b"1"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Keep-Alive", b"5"),
        (b"Accept", b"*/*"),
    ]
    assert end_to_end_headers(headers) == [(b"Accept", b"*/*")]


# -- client -------------------------------------------------------------------


def test_client_request_and_tunnel() -> None:
    client = HttpConnectClient("example.com", 80)
    assert (
        client.data_to_send() == b"CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n"
    )
    reply = b"HTTP/1.0 200 Connection established\r\nProxy-agent: x\r\n\r\nHello"
    for i in range(len(reply)):
        client.receive_data(reply[i : i + 1])
        event = client.next_event()
        if event is not NEED_DATA:
            break
    assert event == TunnelOpen(None, b"")
    assert reply[i + 1 :] == b"Hello"
    with pytest.raises(FramingError, match="already open"):
        client.next_event()
    client = HttpConnectClient("::1", 443, username="alice", password="s3cret")
    assert client.data_to_send() == (
        b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"
        b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (403, ProxyRefusedError, "refused CONNECT example.com:80: 403 Forbidden"),
        (405, ProxyRefusedError, "405 Method Not Allowed"),
        (502, ProxyTargetError, "could not reach example.com:80: 502 Bad Gateway"),
        (504, ProxyTargetError, "504 Gateway Timeout"),
        (407, ProxyAuthError, "requires authentication (407 Proxy Authentication Required)"),
    ],
)
def test_client_refusals(status: int, error: type[ProxyError], words: str) -> None:
    server = HttpProxyServer(authenticate=_check)
    client = HttpConnectClient("example.com", 80)
    server.receive_data(client.data_to_send())
    event = server.next_event()
    if status != 407:
        server = HttpProxyServer()
        server.receive_data(b"CONNECT example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n")
        server.next_event()
        failure = {
            403: "NOT_ALLOWED",
            405: "COMMAND_NOT_SUPPORTED",
            502: "GENERAL",
            504: "TTL_EXPIRED",
        }
        server.refuse(TunnelFailure[failure[status]])
    else:
        assert isinstance(event, Rejected)
    client.receive_data(server.data_to_send())
    with pytest.raises(error, match=re.escape(words)) as info:
        client.next_event()
    assert info.value.reply == status
    assert "\n" not in str(info.value)


def test_client_answers_basic_challenge_on_a_new_connection() -> None:
    client = HttpConnectClient(
        "example.com", 80, username="alice", password="s3cret", preemptive_basic=False
    )
    server = HttpProxyServer(authenticate=_check)
    server.receive_data(client.data_to_send())
    assert isinstance(server.next_event(), Rejected)
    client.receive_data(server.data_to_send())
    assert client.next_event() is NEED_DATA  # 407 with Connection: close: wait for the close
    client.receive_data(b"")
    assert client.next_event() == Reconnect()
    client.reconnected()
    server = HttpProxyServer(authenticate=_check)
    server.receive_data(client.data_to_send())
    assert server.next_event() == TunnelRequest(ProxyKind.HTTP, "example.com", 80, "alice")
    server.accept()
    client.receive_data(server.data_to_send())
    assert client.next_event() == TunnelOpen(None, b"")


def test_client_rejected_credentials() -> None:
    client = HttpConnectClient("example.com", 80, username="alice", password="bad")
    client.data_to_send()
    client.receive_data(
        b'HTTP/1.1 407 Denied\r\nProxy-Authenticate: Basic realm="x"\r\nContent-Length: 0\r\n\r\n'
    )
    with pytest.raises(ProxyAuthError, match="rejected our credentials"):
        client.next_event()


# RFC 7616 section 3.9.1: the example challenge, with the proxy's CONNECT.
RFC7616_CHALLENGE = {
    "realm": "http-auth@example.org",
    "qop": "auth, auth-int",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_matches_rfc7616_example(algorithm: str, response: str) -> None:
    text = digest_response(
        {**RFC7616_CHALLENGE, "algorithm": algorithm},
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce=RFC7616_CNONCE,
    )
    assert f'response="{response}"' in text
    assert 'username="Mufasa"' in text
    assert "nc=00000001" in text
    assert "qop=auth" in text


def test_digest_rejects_what_it_cannot_answer() -> None:
    for challenge in (
        {"nonce": "n"},
        {**RFC7616_CHALLENGE, "algorithm": "SHA-1"},
        {**RFC7616_CHALLENGE, "qop": "auth-int"},
    ):
        with pytest.raises(ValueError, match="Digest"):
            digest_response(
                challenge, username="u", password="p", method="CONNECT", uri="h:1", cnonce="c"
            )


def test_parse_challenges() -> None:
    header = (
        b'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        b'nonce="7ypf", opaque="FQ\\"he", Basic realm="x y", Negotiate abc=='
    )
    assert parse_challenges([header]) == [
        (
            "digest",
            {
                "realm": "http-auth@example.org",
                "qop": "auth, auth-int",
                "algorithm": "SHA-256",
                "nonce": "7ypf",
                "opaque": 'FQ"he',
            },
        ),
        ("basic", {"realm": "x y"}),
        ("negotiate", {"": "abc=="}),
    ]
    with pytest.raises(ValueError, match="unterminated quoted string"):
        parse_challenges([b'Digest realm="open'])


def test_client_answers_digest_on_the_same_connection() -> None:
    client = HttpConnectClient(
        "example.com",
        80,
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        preemptive_basic=False,
    )
    first = client.data_to_send()
    assert b"Proxy-Authorization" not in first
    body = b"denied"
    client.receive_data(
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Digest realm="http-auth@example.org", qop="auth", algorithm=MD5, '
        b'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQ"\r\n'
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert client.next_event() is NEED_DATA
    client.receive_data(body)
    assert client.next_event() is NEED_DATA
    retry = client.data_to_send()
    assert retry.startswith(b"CONNECT example.com:80 HTTP/1.1\r\n")
    expected = digest_response(
        {
            "realm": "http-auth@example.org",
            "qop": "auth",
            "algorithm": "MD5",
            "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "opaque": "FQ",
        },
        username="Mufasa",
        password="Circle of Life",
        method="CONNECT",
        uri="example.com:80",
        cnonce=RFC7616_CNONCE,
    )
    assert b"Proxy-Authorization: " + expected.encode() + b"\r\n" in retry
    client.receive_data(b"HTTP/1.1 200 OK\r\n\r\n")
    assert client.next_event() == TunnelOpen(None, b"")


@pytest.mark.parametrize(
    "reply",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"\x05\x00\r\n\r\n", b"HTTP/1.1 2000 x\r\n\r\n"],
)
def test_client_other_protocol(reply: bytes) -> None:
    client = HttpConnectClient("example.com", 80)
    client.receive_data(reply)
    with pytest.raises(ProxyProtocolError, match="does not speak HTTP"):
        client.next_event()


def test_client_end_of_stream_and_usage_errors() -> None:
    client = HttpConnectClient("example.com", 80)
    client.receive_data(b"")
    with pytest.raises(ProxyRefusedError, match="closed the connection"):
        client.next_event()
    for host, port in (("bad host", 80), ("example.com", 0), ("[1.2.3.4]", 80)):
        with pytest.raises(SettingError):
            HttpConnectClient(host, port)
    for username, password in (("a:b", "p"), ("a", "p\r\nX-Injected: 1"), ("a\x00", "p")):
        with pytest.raises(SettingError):
            HttpConnectClient("example.com", 80, username=username, password=password)


# -- shared: detection, DNS plan, errno ----------------------------------------


def test_detect_proxy_protocol() -> None:
    assert detect_proxy_protocol(b"") is None
    assert detect_proxy_protocol(b"\x04\x01") is ProxyKind.SOCKS4
    assert detect_proxy_protocol(b"\x05") is ProxyKind.SOCKS5
    assert detect_proxy_protocol(b"CONNECT") is ProxyKind.HTTP
    assert detect_proxy_protocol(b"get") is ProxyKind.HTTP
    for first in (b"\x00", b"\x16\x03\x01", b" ", b"1", b"\xff"):
        with pytest.raises(FramingError, match="not a proxy protocol"):
            detect_proxy_protocol(first)


def test_plan_target() -> None:
    assert plan_target("192.0.2.1", "none") == TargetPlan(False, False)
    assert plan_target("::1", "local") == TargetPlan(False, False)
    assert plan_target("example.com", "remote") == TargetPlan(False, False)
    assert plan_target("example.com", "local") == TargetPlan(True, False)
    assert plan_target("example.com", "both") == TargetPlan(True, True)
    with pytest.raises(AddressError):
        plan_target("example.com", "none")
    with pytest.raises(SettingError):
        plan_target("example.com", "dns")  # type: ignore[arg-type]


def test_failure_for_errno() -> None:
    import errno

    assert failure_for_errno(errno.ECONNREFUSED) is TunnelFailure.CONNECTION_REFUSED
    assert failure_for_errno(errno.EHOSTUNREACH) is TunnelFailure.HOST_UNREACHABLE
    assert failure_for_errno(errno.ETIMEDOUT) is TunnelFailure.TTL_EXPIRED
    assert failure_for_errno(None) is TunnelFailure.GENERAL
    assert failure_for_errno(errno.EIO) is TunnelFailure.GENERAL


# -- fuzz ---------------------------------------------------------------------


@PROPERTY
@given(
    data=st.sampled_from([NCAT_CONNECT, NCAT_CONNECT_V6, CURL_CONNECT]),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    tail=st.binary(max_size=20),
)
def test_server_any_split_parses_the_same(data: bytes, cuts: list[int], tail: bytes) -> None:
    whole = first_event(data)[0]
    server = HttpProxyServer()
    stream = data + tail
    points = sorted({c % (len(stream) + 1) for c in cuts})
    event: object = NEED_DATA
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        if b == a:
            continue  # b"" would say end of stream
        server.receive_data(stream[a:b])
        if event is NEED_DATA:
            event = server.next_event()
    assert event == whole
    server.accept()
    assert server.trailing_data == tail


@PROPERTY
@given(
    data=st.one_of(
        st.binary(max_size=400),
        st.sampled_from([NCAT_CONNECT, CURL_CONNECT]).flatmap(
            lambda d: st.integers(0, len(d)).flatmap(
                lambda i: st.binary(max_size=30).map(lambda junk: d[:i] + junk + d[i:])
            )
        ),
    ),
    step=st.integers(1, 64),
)
def test_server_arbitrary_bytes_decode_or_framing_error(data: bytes, step: int) -> None:
    server = HttpProxyServer(max_head_size=1024)
    try:
        for i in range(0, len(data), step):
            server.receive_data(data[i : i + step])
            event = server.next_event()
            if event is not NEED_DATA:
                break
    except (FramingError, IncompleteReadError):
        pass


@PROPERTY
@given(data=st.binary(max_size=400), step=st.integers(1, 64), auth=st.booleans())
def test_client_arbitrary_replies_wait_open_or_proxy_error(
    data: bytes, step: int, auth: bool
) -> None:
    kwargs = {"username": "alice", "password": "s3cret"} if auth else {}
    client = HttpConnectClient("example.com", 80, max_head_size=1024, **kwargs)  # type: ignore[arg-type]
    try:
        for i in range(0, len(data), step):
            client.receive_data(data[i : i + step])
            if isinstance(client.next_event(), TunnelOpen | Reconnect):
                break
    except ProxyError:
        pass


@PROPERTY
@given(st.binary(max_size=200))
def test_parse_challenges_never_crashes_otherwise(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_challenges([data])


def test_server_rejects_non_ascii_targets() -> None:
    server = HttpProxyServer()
    server.receive_data(b"GET http://x/\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProxyRequestError):  # h11's check, before ours
        server.next_event()
    assert server.data_to_send().startswith(b"HTTP/1.1 400 ")


def _digest_407(stale: bool) -> bytes:
    return (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Digest realm="r", nonce="n", qop="auth"'
        + (b", stale=true" if stale else b"")
        + b"\r\nContent-Length: 0\r\n\r\n"
    )


def test_client_retries_a_stale_digest_nonce_once() -> None:
    client = HttpConnectClient("h", 1, username="u", password="p", preemptive_basic=False)
    client.data_to_send()
    for stale in (False, True):
        client.receive_data(_digest_407(stale))
        assert client.next_event() is NEED_DATA
        assert b"Proxy-Authorization: Digest " in client.data_to_send()
    client.receive_data(_digest_407(True))
    with pytest.raises(ProxyAuthError, match="rejected our credentials"):
        client.next_event()


@pytest.mark.parametrize("chunk", [1, 100, 4096])
def test_unfinished_heads_are_bounded(chunk: int) -> None:
    limit = 1024
    server = HttpProxyServer(max_head_size=limit)
    client = HttpConnectClient("h", 1, max_head_size=limit)
    stream = b"GET http://x/ HTTP/1.1\r\nA: " + b"a" * (limit + chunk)
    for machine, error in ((server, ProxyRequestError), (client, ProxyProtocolError)):
        with pytest.raises(error):
            for i in range(0, len(stream), chunk):
                machine.receive_data(stream[i : i + chunk])
                assert machine.next_event() is NEED_DATA
                assert i < limit + chunk  # refused before holding much more than the limit
    assert server.data_to_send().startswith(b"HTTP/1.1 431 ")


@PROPERTY
@given(
    host=st.one_of(
        st.ip_addresses().map(str),
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{1,10}){0,3}", fullmatch=True),
    ),
    port=st.integers(1, 65535),
    auth=st.booleans(),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    tail=st.binary(max_size=20),
)
def test_client_and_server_agree_over_any_split(
    host: str, port: int, auth: bool, cuts: list[int], tail: bytes
) -> None:
    kwargs = {"username": "alice", "password": "s3cret"} if auth else {}
    client = HttpConnectClient(host, port, **kwargs)  # type: ignore[arg-type]
    server = HttpProxyServer(authenticate=_check if auth else None)
    server.receive_data(client.data_to_send())
    request = server.next_event()
    assert request == TunnelRequest(ProxyKind.HTTP, host, port, "alice" if auth else None)
    server.accept()
    stream = server.data_to_send() + tail
    points = sorted({c % (len(stream) + 1) for c in cuts})
    event: object = NEED_DATA
    after = b""
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        if b == a:
            continue
        if event is NEED_DATA:
            client.receive_data(stream[a:b])
            event = client.next_event()
        else:
            after += stream[a:b]
    assert isinstance(event, TunnelOpen)
    assert event.trailing_data + after == tail
