"""The lecture's programs as processes: output lines, exit codes, signals."""

from __future__ import annotations

import json
import signal
import socket

import pytest

from helpers import LOOPBACK_TIMEOUT, free_port, run_cli, start_server

pytestmark = pytest.mark.timeout(60)


def test_demo_runs_both_exchanges() -> None:
    result = run_cli("demo")
    assert result.code == 0, result.err
    lines = [line.split("|", 1)[1].strip() for line in result.out.splitlines() if "|" in line]
    assert "Client connected" in lines
    assert "Received: Hello from client" in lines
    assert "Received: Hello from server" in lines
    assert "Received: Hello from UDP client" in lines
    assert "Received: Message received" in lines


def test_tcp_once_exchange_and_exit() -> None:
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0", "--once") as server:
        port = server.port()
        result = run_cli("tcp-client", "-p", str(port))
        assert result.code == 0
        assert result.out == "Received: Hello from server\n"
        assert server.wait() == 0
        assert server.out.splitlines() == [
            f"Server listening on port {port}",
            "Client connected",
            "Received: Hello from client",
        ]


def test_tcp_wire_bytes_match_the_c_original() -> None:
    """A raw client: no newline in, no newline out; a line in, a line out."""
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0") as server:
        port = server.port()
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"a line\n")
            assert s.recv(1024) == b"Hello from server\n"
            s.sendall(b"Hello from client")
            assert s.recv(1024) == b"Hello from server"
            assert s.recv(1024) == b""  # after a raw message the server closes
        assert server.terminate() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_server_stops_cleanly_on_signal(sig: int) -> None:
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0") as server:
        port = server.port()
        assert run_cli("tcp-client", "-p", str(port), "--count", "2").code == 0
        assert server.terminate(sig) == 0
        assert "Traceback" not in server.err
        assert "summary: connections 1" in server.err


def test_tcp_server_serves_clients_at_once() -> None:
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0", "-q") as server:
        port = server.port()
        # Two connections open at the same time, answered in reverse order.
        a = socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT)
        b = socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT)
        with a, b:
            for s in (a, b):
                s.settimeout(LOOPBACK_TIMEOUT)
            b.sendall(b"from b\n")
            assert b.recv(100) == b"Hello from server\n"
            a.sendall(b"from a\n")
            assert a.recv(100) == b"Hello from server\n"
        assert server.terminate() == 0


def test_udp_once() -> None:
    with start_server("udp-server", "--host", "127.0.0.1", "-p", "0", "--once") as server:
        port = server.port()
        result = run_cli("udp-client", "-p", str(port))
        assert result.code == 0
        assert result.out == "Received: Message received\n"
        assert server.wait() == 0
        assert "Received: Hello from UDP client" in server.out


def test_custom_message_and_reply_and_count() -> None:
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0", "--reply", "pong") as server:
        port = server.port()
        result = run_cli("tcp-client", "-p", str(port), "-m", "ping", "--count", "3")
        assert result.code == 0
        assert result.out == "Received: pong\n" * 3
        assert server.terminate() == 0
        assert server.out.count("Received: ping") == 3


def test_json_log_format() -> None:
    with start_server(
        "tcp-server", "--host", "127.0.0.1", "-p", "0", "--once", "--log-format", "json"
    ) as server:
        port = int(server.wait_for(r'"address": "127\.0\.0\.1:(\d+)"').group(1))
        assert run_cli("tcp-client", "-p", str(port)).code == 0
        assert server.wait() == 0
        events = [json.loads(line) for line in server.out.splitlines()]
        assert [e["event"] for e in events] == ["listening", "connected", "received"]
        assert events[2]["text"] == "Received: Hello from client"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_long_datagram_is_cut_on_the_text_line_only(log_format: str) -> None:
    # The JSON line holds all of it: small enough for the pipe this test
    # reads only after the exchange.
    payload = bytes(range(97, 123)) * (2519 if log_format == "text" else 200)
    args = ["udp-server", "--host", "127.0.0.1", "-p", "0", "--once"]
    with start_server(*args, "--log-format", log_format) as srv:
        port = int(srv.search(r'(?:port |"address": "127\.0\.0\.1:)(\d+)').group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendto(payload, ("127.0.0.1", port))
            assert s.recv(100) == b"Message received"
        assert srv.wait() == 0
    if log_format == "text":
        line = srv.out.splitlines()[1]
        assert line == f"Received: {payload[:1023].decode()}... (65494 bytes in all)"
        assert len(payload) == 65494
    else:
        events = [json.loads(line) for line in srv.out.splitlines()]
        received = next(e for e in events if e["event"] == "received")
        assert received["text"] == f"Received: {payload.decode()}"


def test_server_host_may_carry_the_port() -> None:
    port = free_port()
    with start_server("tcp-server", "--host", f"127.0.0.1:{port}", "--once") as srv:
        assert srv.port() == port
        assert run_cli("tcp-client", f"127.0.0.1:{port}").code == 0
        assert srv.wait() == 0


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["--host", "::1:9000"], "ambiguous host '::1:9000': write [::1]:9000 for port 9000"),
        (["--host", "127.0.0.1:9000", "-p", "9001"], "give the port once"),
    ],
)
@pytest.mark.parametrize("command", ["tcp-server", "udp-server"])
def test_server_host_values_are_understood_or_refused(
    command: str, argv: list[str], text: str
) -> None:
    result = run_cli(command, *argv)
    assert result.code == 2
    assert result.err.startswith("socketkit: error: ")
    assert text in result.err
