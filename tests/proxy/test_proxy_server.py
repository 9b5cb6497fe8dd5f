"""``socketkit proxy`` end to end on loopback: our client library against our server.

Each test starts the proxy as a subprocess (ready at its listening line)
and a target on a thread: tunnels of every protocol carry bytes both ways,
credentials and destination rules give the right reply codes, plain
``http://`` requests are forwarded with keep-alive, and a client that
breaks the rules costs one logged line while the server keeps serving.
"""

from __future__ import annotations

import re
import socket

import pytest
from proxysupport import (
    MESSAGE,
    exchange,
    http_target,
    open_fds,
    proxy_server,
    silent_target,
)

from socketkit import sync
from socketkit.errors import ProxyAuthError, ProxyRefusedError, ProxyTargetError
from socketkit.framing.tunnel import DnsPolicy, ProxyKind
from socketkit.proxy_client import Proxy

from helpers import LOOPBACK_TIMEOUT, echo_target, free_port, start_server

KINDS = [ProxyKind.SOCKS4, ProxyKind.SOCKS5, ProxyKind.HTTP]


def _through(
    port: int,
    kind: ProxyKind,
    target: str,
    *,
    user: str | None = None,
    password: str | None = None,
    dns: DnsPolicy = "remote",
) -> bytes:
    """MESSAGE through the proxy to an echo target and back."""
    proxy = Proxy(f"127.0.0.1:{port}", kind, username=user, password=password, dns=dns)
    with sync.connect(target, proxy=proxy, timeout=LOOPBACK_TIMEOUT) as conn:
        conn.send_all(MESSAGE)
        conn.shutdown_write()
        received = b""
        while data := conn.receive_some():
            received += data
    return received


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("host", "dns"), [("127.0.0.1", "remote"), ("localhost", "remote"), ("localhost", "local")]
)
def test_every_protocol_tunnels_both_ways(kind: ProxyKind, host: str, dns: DnsPolicy) -> None:
    with echo_target() as target, proxy_server("-v") as (server, port):
        assert _through(port, kind, f"{host}:{target}", dns=dns) == MESSAGE
        name = {ProxyKind.SOCKS4: "socks4", ProxyKind.SOCKS5: "socks5"}.get(kind, "http")
        server.search(
            rf"{name} CONNECT {re.escape(host) if dns == 'remote' else '127.0.0.1'}:{target}", "err"
        )


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("kind", [ProxyKind.SOCKS5, ProxyKind.HTTP])
def test_ipv6_targets(kind: ProxyKind) -> None:
    listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    with listener, proxy_server() as (_server, port):
        proxy = Proxy(f"127.0.0.1:{port}", kind)
        with sync.connect(f"[::1]:{listener.getsockname()[1]}", proxy=proxy) as conn:
            listener.settimeout(LOOPBACK_TIMEOUT)
            accepted, _ = listener.accept()
            with accepted:
                accepted.sendall(b"from the target")
                assert conn.receive_exactly(15, timeout=LOOPBACK_TIMEOUT) == b"from the target"


def test_credentials_good_and_bad() -> None:
    with echo_target() as target, proxy_server("--auth", "alice:s3:cret") as (server, port):
        where = f"127.0.0.1:{target}"
        for kind in (ProxyKind.SOCKS5, ProxyKind.HTTP):
            assert _through(port, kind, where, user="alice", password="s3:cret") == MESSAGE
        with pytest.raises(ProxyAuthError, match=r"rejected the username and password"):
            _through(port, ProxyKind.SOCKS5, where, user="alice", password="wrong")
        with pytest.raises(ProxyAuthError, match=r"accepts none of our authentication methods"):
            _through(port, ProxyKind.SOCKS5, where)
        with pytest.raises(ProxyAuthError, match=r"407"):
            _through(port, ProxyKind.HTTP, where, user="alice", password="wrong")
        with pytest.raises(ProxyRefusedError, match=r"reply 91"):
            _through(port, ProxyKind.SOCKS4, where, user="alice")
        server.search(r"refused: SOCKS5 authentication failed for user 'alice'", "err")


@pytest.mark.parametrize(
    ("rules", "kind", "error", "text"),
    [
        (["--deny-dest", ":{port}"], ProxyKind.SOCKS5, ProxyRefusedError, "ruleset (reply 2)"),
        (["--deny-dest", "127.0.0.0/8"], ProxyKind.SOCKS5, ProxyRefusedError, "(reply 2)"),
        (["--allow-dest", "10.0.0.0/8"], ProxyKind.HTTP, ProxyRefusedError, "403 Forbidden"),
        (["--deny-dest", "localhost"], ProxyKind.SOCKS4, ProxyRefusedError, "(reply 91)"),
    ],
)
def test_destination_rules_refuse_with_the_right_code(
    rules: list[str], kind: ProxyKind, error: type[Exception], text: str
) -> None:
    with echo_target() as target:
        args = [rule.format(port=target) for rule in rules]
        with proxy_server(*args) as (server, port):
            # A name that resolves into a denied range is denied too.
            with pytest.raises(error, match=re.escape(text)) as info:
                _through(port, kind, f"localhost:{target}")
            assert "\n" not in str(info.value)
            assert f"127.0.0.1:{port}" in str(info.value)
            server.search(r"destination (denied by --deny-dest|not in any --allow-dest)", "err")


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (ProxyKind.SOCKS5, "could not reach 127.0.0.1:{port}: connection refused (reply 5)"),
        (ProxyKind.HTTP, "could not reach 127.0.0.1:{port}: 502 Bad Gateway"),
    ],
)
def test_a_refused_target_is_named_in_the_reply(kind: ProxyKind, text: str) -> None:
    closed = free_port()
    with proxy_server() as (_server, port), pytest.raises(ProxyTargetError) as info:
        _through(port, kind, f"127.0.0.1:{closed}")
    assert text.format(port=closed) in str(info.value)


@pytest.mark.parametrize(
    ("kind", "text"), [(ProxyKind.SOCKS5, "TTL expired (reply 6)"), (ProxyKind.HTTP, "504")]
)
def test_a_target_that_never_answers_is_ttl_expired_or_504(kind: ProxyKind, text: str) -> None:
    with (
        silent_target() as target,
        proxy_server("--connect-timeout", "0.3") as (_s, port),
        pytest.raises(ProxyTargetError, match=re.escape(text)),
    ):
        _through(port, kind, f"127.0.0.1:{target}")


def test_garbage_is_one_logged_line_and_the_server_keeps_serving() -> None:
    with echo_target() as target, proxy_server() as (server, port):
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as bad:
            assert exchange(bad, b"\x16\x03\x01 not a proxy") == b""
        line = server.search(r"^.*not a proxy protocol.*$", "err").group(0)
        assert "first byte 0x16" in line
        assert _through(port, ProxyKind.SOCKS5, f"127.0.0.1:{target}") == MESSAGE
        assert "Traceback" not in server.err


def test_a_client_that_stalls_mid_handshake_is_dropped() -> None:
    with proxy_server("--request-timeout", "0.3") as (server, port):
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as slow:
            slow.sendall(b"\x05\x01")  # half a SOCKS5 greeting, then nothing
            assert slow.recv(16) == b""
        server.search(r"closed: no complete proxy request within 0\.3 s", "err")


def test_descriptors_come_back_after_tunnels() -> None:
    with echo_target() as target, proxy_server() as (server, port):
        assert _through(port, ProxyKind.SOCKS5, f"127.0.0.1:{target}") == MESSAGE
        baseline = open_fds(server.proc.pid)
        for kind in KINDS * 5:
            assert _through(port, kind, f"127.0.0.1:{target}") == MESSAGE
        server.wait_until(
            lambda: True if open_fds(server.proc.pid) <= baseline else None,
            "descriptors back to the baseline",
            LOOPBACK_TIMEOUT,
        )


# -- forwarding plain http:// requests -----------------------------------------


def _responses(raw: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each Content-Length or chunked response in ``raw``."""
    found = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        lowered = {k.lower(): v for k, v in headers.items()}
        if b"content-length" in lowered:
            size = int(lowered[b"content-length"])
            body, raw = raw[:size], raw[size:]
        else:
            assert lowered.get(b"transfer-encoding") == b"chunked", head
            body = b""
            while True:
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line, 16)
                body, raw = body + raw[:size], raw[size + 2 :]
                if size == 0:
                    break
        found.append((status, body))
    return found


def _forward(port: int, request: bytes) -> list[tuple[int, bytes]]:
    with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as sock:
        return _responses(exchange(sock, request))


def test_forwarding_keeps_the_client_connection_alive() -> None:
    with http_target() as origin, proxy_server() as (_server, port):
        url = f"http://127.0.0.1:{origin}"
        host = f"Host: 127.0.0.1:{origin}\r\n"
        request = (
            f"GET {url}/hello HTTP/1.1\r\n{host}\r\n"
            f"GET {url}/stream HTTP/1.1\r\n{host}\r\n"
            f"POST {url}/echo HTTP/1.1\r\n{host}Content-Length: 5\r\n\r\nabcde"
            f"POST {url}/echo HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n"
            "3\r\nxyz\r\n2\r\n!!\r\n0\r\n\r\n"
            f"HEAD {url}/hello HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        ).encode()
        assert _forward(port, request) == [
            (200, b"hello\n"),
            (200, b"one two three\n"),
            (200, b"got abcde"),
            (200, b"got xyz!!"),
            (200, b""),
        ]


def test_forwarding_drops_the_proxy_credentials() -> None:
    with http_target() as origin, proxy_server("--auth", "alice:s3cret") as (_server, port):
        request = (
            f"GET http://127.0.0.1:{origin}/hello HTTP/1.1\r\nHost: x\r\n"
            "Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as sock:
            raw = exchange(sock, request)
        assert b"x-seen-proxy-authorization: -\r\n" in raw.lower()
        assert _responses(raw) == [(200, b"hello\n")]


@pytest.mark.parametrize(
    ("args", "request_text", "status"),
    [
        ((), "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ((), "GET http://user@127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (("--no-forward",), "GET http://127.0.0.1:{origin}/hello HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (
            (),
            "POST http://127.0.0.1:{origin}/echo HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 999999999999\r\n\r\n",
            413,
        ),
        (("--auth", "a:b"), "GET http://127.0.0.1:{origin}/hello HTTP/1.1\r\nHost: x\r\n\r\n", 407),
        (
            ("--deny-dest", ":{origin}"),
            "GET http://127.0.0.1:{origin}/ HTTP/1.1\r\nHost: x\r\n\r\n",
            403,
        ),
        ((), "GET http://127.0.0.1:{closed}/ HTTP/1.1\r\nHost: x\r\n\r\n", 502),
    ],
)
def test_bad_requests_get_their_status(
    args: tuple[str, ...], request_text: str, status: int
) -> None:
    closed = free_port()
    with http_target() as origin:
        args = tuple(a.format(origin=origin) for a in args)
        with proxy_server(*args) as (server, port):
            request = request_text.format(origin=origin, closed=closed).encode()
            assert [s for s, _ in _forward(port, request)] == [status]
            assert "Traceback" not in server.err


def test_listening_beyond_loopback_without_auth_warns() -> None:
    with proxy_server("--host", "0.0.0.0") as (server, _port):
        server.search(r"warning: proxy listening on 0\.0\.0\.0 without --auth", "err")
    with proxy_server("--host", "0.0.0.0", "--auth", "a:b") as (server, _port):
        assert "warning" not in server.err
    with proxy_server() as (server, _port):
        assert "warning" not in server.err


def test_relay_proxy_listen_is_the_same_server() -> None:
    with (
        echo_target() as target,
        http_target() as origin,
        start_server(
            "relay",
            "proxy-listen:0,auth=alice:s3cret,deny-dest=:" + str(origin),
            "--max-conns",
            "4",
        ) as server,
    ):
        # A relay keeps standard output for data: its lines go to standard error.
        port = int(server.search(r"listening on port (\d+)", "err").group(1))
        assert _through(port, ProxyKind.SOCKS5, f"127.0.0.1:{target}", user="alice",
                        password="s3cret") == MESSAGE  # fmt: skip
        with pytest.raises(ProxyRefusedError, match=r"reply 2"):
            _through(port, ProxyKind.SOCKS5, f"127.0.0.1:{origin}", user="alice", password="s3cret")
        with pytest.raises(ProxyAuthError):
            _through(port, ProxyKind.SOCKS5, f"127.0.0.1:{target}")
        assert "warning" not in server.err  # loopback by default, and credentials


def test_relay_proxy_side_reaches_the_target_through_the_proxy() -> None:
    with (
        echo_target() as target,
        proxy_server("-v") as (proxy, port),
        start_server(
            "relay", "-v", "tcp-listen:0,fork", f"socks5:127.0.0.1:{port}:localhost:{target}"
        ) as relay,
    ):
        relay_port = int(relay.search(r"listening on port (\d+)", "err").group(1))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", relay_port), timeout=LOOPBACK_TIMEOUT) as c:
                assert exchange(c, MESSAGE) == MESSAGE
        proxy.search(rf"socks5 CONNECT localhost:{target}", "err")
