"""Trace lines and the strace checker, without strace: fast and exact."""

from __future__ import annotations

import io
import socket

import pytest
from test_trace_strace import Call, check_matches

from socketkit import _sockets
from socketkit.address import InetEndpoint
from socketkit.trace import TraceEvent, TracePrinter, preview, tracing

pytestmark = pytest.mark.timeout(30)


def test_preview_escapes_and_truncates() -> None:
    assert preview(b'Hi "x"\n\x00\\') == '"Hi \\"x\\"\\n\\x00\\\\"'
    assert preview(b"a" * 40, limit=4) == '"aaaa"...'


def test_line_format_plain_and_coloured() -> None:
    event = TraceEvent("connect", 3, "127.0.0.1:8080", error="ECONNREFUSED (Connection refused)")
    assert (
        event.format()
        == "[trace] fd 3 connect(127.0.0.1:8080) = -1 ECONNREFUSED (Connection refused)"
    )
    assert "\x1b[" in event.format(colour=True)
    assert event.syscall == "connect"
    assert TraceEvent("send", 3, "").syscall == "sendto"


def test_printer_is_plain_off_a_terminal() -> None:
    out = io.StringIO()
    TracePrinter(out)(TraceEvent("close", 4, ""))
    assert out.getvalue() == "[trace] fd 4 close() = 0\n"


def test_loopback_exchange_events_in_order() -> None:
    events: list[TraceEvent] = []
    with tracing(sink=events.append):
        listener = _sockets.bind_socket(InetEndpoint("127.0.0.1", 0))
        port = listener.getsockname()[1]
        client = _sockets.connect_socket(InetEndpoint("127.0.0.1", port), timeout=5)
        conn, _ = listener.accept()
        client.sendall(b"ping")
        assert conn.recv(100) == b"ping"
        client.shutdown(socket.SHUT_WR)
        for sock in (conn, client, listener):
            sock.close()
    assert _sockets._new_socket is socket.socket  # restored
    calls = [(e.call, e.fd) for e in events]
    lfd, cfd = events[0].fd, events[4].fd
    afd = int(next(e.result for e in events if e.call == "accept"))
    assert calls == [
        ("socket", lfd),
        ("setsockopt", lfd),
        ("bind", lfd),
        ("listen", lfd),
        ("socket", cfd),
        ("connect", cfd),
        ("setsockopt", cfd),
        ("accept", lfd),
        ("send", cfd),
        ("recv", afd),
        ("shutdown", cfd),
        ("close", afd),
        ("close", cfd),
        ("close", lfd),
    ]
    assert "127.0.0.1:0" in events[2].args


def test_bind_shows_both_byte_orders() -> None:
    events: list[TraceEvent] = []
    with tracing(sink=events.append), socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))  # not from the seam: not traced
        port = plain.getsockname()[1]
    from socketkit.trace._socket import _bind_args

    assert events == []
    assert f"port {port} = 0x{port:04x} in host order" in _bind_args(("127.0.0.1", port))
    assert "bytes 1f 90 on the wire" in _bind_args(("0.0.0.0", 8080))


def test_checker_catches_a_missing_line() -> None:
    strace = [
        Call("socket", 3, "3 AF_INET", "socket"),
        Call("sendto", 3, "5", "sendto"),
        Call("close", 3, "0", "close"),
    ]
    check_matches([strace[0], strace[1], strace[2]], strace)
    with pytest.raises(AssertionError, match="did not show"):
        check_matches([strace[0], strace[2]], strace)
    with pytest.raises(AssertionError, match="not seen by strace"):
        check_matches([*strace, Call("recvfrom", 3, "1", "recv")], strace)
