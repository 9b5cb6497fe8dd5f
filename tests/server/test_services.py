"""The engine's services over real loopback sockets, started as users start them."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from socketkit.framing import LengthPrefixedCodec, LineCodec
from socketkit.server._services import chargen_line
from socketkit.sync import connect, open_datagram_client

from helpers import LOOPBACK_TIMEOUT, socketkit_argv, start_server

pytestmark = pytest.mark.timeout(60)


def _tcp(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT)
    s.settimeout(LOOPBACK_TIMEOUT)
    return s


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_echo_every_byte_in_order_and_rest_after_half_close() -> None:
    payload = os.urandom(4 * 1024 * 1024)
    with start_server("tcp-server", "--service", "echo", "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        with _tcp(port) as s:
            received: list[bytes] = []
            reader = threading.Thread(target=lambda: received.append(_read_all(s)))
            reader.start()
            view = memoryview(payload)
            for i in range(0, len(payload), 99_991):  # odd-sized writes
                s.sendall(view[i : i + 99_991])
            s.shutdown(socket.SHUT_WR)
            reader.join(LOOPBACK_TIMEOUT)
            assert not reader.is_alive()
        assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()
        assert srv.terminate() == 0


def test_line_echo_and_max_line_closes_with_reason() -> None:
    args = ["tcp-server", "--service", "echo", "--frame", "line", "--max-line", "16"]
    with start_server(*args, "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        with connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT) as good:
            good.send_all(b"one\r\ntwo\nthr")
            good.send_all(b"ee\n")
            assert [good.receive_line() for _ in range(3)] == [b"one", b"two", b"three"]
            with _tcp(port) as bad:
                bad.sendall(b"x" * 100)
                assert _read_all(bad) == b""  # closed without an answer
            good.send_message(LineCodec(), b"still served")
            assert good.receive_line() == b"still served"
        srv.terminate()
        assert re.search(r"closed: peer broke framing: line longer than 16 bytes", srv.err)
        assert "Traceback" not in srv.err


def test_u32_echo_and_oversized_header() -> None:
    args = ["tcp-server", "--service", "echo", "--frame", "u32", "--max-line", "1024"]
    with start_server(*args, "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        codec = LengthPrefixedCodec(1024)
        with connect(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT) as conn:
            for message in (b"", b"a", os.urandom(1024)):
                conn.send_message(codec, message)
                assert conn.receive_message(codec) == message
        with _tcp(port) as bad:
            bad.sendall(struct.pack("!I", 0xFFFFFFFF))  # claims 4 GiB
            assert _read_all(bad) == b""
        srv.terminate()
        assert "frame header announces 4294967295 bytes" in srv.err


def test_discard_chargen_daytime() -> None:
    with start_server(
        "tcp-server", "--service", "discard", "--host", "127.0.0.1", "-p", "0"
    ) as srv:
        with _tcp(srv.port()) as s:
            s.sendall(b"x" * 100_000)
            s.shutdown(socket.SHUT_WR)
            assert _read_all(s) == b""
        assert srv.terminate() == 0
        assert "bytes_in 100000" in srv.err
    with start_server(
        "tcp-server", "--service", "chargen", "--host", "127.0.0.1", "-p", "0"
    ) as srv:
        with _tcp(srv.port()) as s:
            data = b""
            while len(data) < 74 * 200:
                data += s.recv(65536)
        lines = data.split(b"\r\n")[:200]
        assert lines == [chargen_line(i)[:-2] for i in range(200)]
        assert srv.terminate() == 0
    with start_server(
        "tcp-server", "--service", "daytime", "--host", "127.0.0.1", "-p", "0"
    ) as srv:
        with _tcp(srv.port()) as s:
            text = _read_all(s)
        assert re.fullmatch(rb"\w+day, \w+ \d\d, \d{4} \d\d:\d\d:\d\d-\w*\r\n", text), text
        assert srv.terminate() == 0


@pytest.mark.parametrize("service", ["echo", "daytime", "chargen", "hello"])
def test_udp_services(service: str) -> None:
    with start_server("udp-server", "--service", service, "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        with open_datagram_client(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT) as udp:
            reply = udp.request(b"ping", timeout=2.0, retries=3)
        expected = {
            "echo": b"ping",
            "hello": b"Message received",
        }
        if service in expected:
            assert reply == expected[service]
        elif service == "daytime":
            assert reply.endswith(b"\r\n")
        else:
            assert len(reply) == 512
        assert srv.terminate() == 0


def test_udp_discard_sends_nothing_and_server_keeps_serving() -> None:
    with start_server(
        "udp-server", "--service", "discard", "--host", "127.0.0.1", "-p", "0"
    ) as srv:
        port = srv.port()
        with open_datagram_client(f"127.0.0.1:{port}", timeout=0.3) as udp:
            udp.send(b"")
            udp.send(b"x" * 65507)
            with pytest.raises(TimeoutError):
                udp.receive()
        assert srv.terminate() == 0
        assert "datagrams_in 2" in srv.err


def test_max_conns_holds_back_the_next_client() -> None:
    args = ["tcp-server", "--service", "echo", "--max-conns", "1", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        port = srv.port()
        first = _tcp(port)
        first.sendall(b"a")
        assert first.recv(1) == b"a"
        second = _tcp(port)  # completes in the backlog, but is not served yet
        second.sendall(b"b")
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):
            second.recv(1)
        first.close()
        second.settimeout(LOOPBACK_TIMEOUT)
        assert second.recv(1) == b"b"  # served once the first is gone
        second.close()
        assert srv.terminate() == 0


def test_idle_timeout_closes_silent_connection() -> None:
    args = ["tcp-server", "--service", "echo", "--idle-timeout", "0.3", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        with _tcp(srv.port()) as s:
            assert _read_all(s) == b""  # the server closed it
        srv.terminate()
        assert "idle for more than 0.3 s" in srv.err


def _wait_until_refused(port: int) -> None:
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT).close()
        except (ConnectionRefusedError, ConnectionResetError):
            return  # refused, or reset when the listener closed with it queued
    raise AssertionError(f"port {port} still accepting after {LOOPBACK_TIMEOUT} s")


def test_graceful_shutdown_lets_exchange_finish() -> None:
    args = ["tcp-server", "--service", "echo", "--drain-timeout", "5", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        port = srv.port()
        s = _tcp(port)
        s.sendall(b"before")
        assert s.recv(6) == b"before"
        srv.proc.send_signal(signal.SIGTERM)
        _wait_until_refused(port)  # the listener closed: shutdown has begun
        s.sendall(b"during")
        assert s.recv(6) == b"during"
        s.shutdown(socket.SHUT_WR)
        assert _read_all(s) == b""
        s.close()
        assert srv.wait() == 0
        assert "Traceback" not in srv.err


def test_restart_on_same_port_binds_at_once() -> None:
    with start_server("tcp-server", "--service", "echo", "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        with _tcp(port) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        assert srv.terminate() == 0
    # The server closed connections first: they sit in TIME_WAIT on its side.
    with start_server(
        "tcp-server", "--service", "echo", "--host", "127.0.0.1", "-p", str(port)
    ) as srv:
        assert srv.port() == port
        assert srv.terminate() == 0


def test_workers_share_the_port() -> None:
    args = ["tcp-server", "--service", "echo", "--workers", "2", "-v", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        port = int(srv.wait_for(r"listening on port (\d+) \(2 workers\)").group(1))
        for _ in range(40):
            with _tcp(port) as s:
                s.sendall(b"w")
                assert s.recv(1) == b"w"
        assert srv.terminate() == 0
        served = [int(n) for n in re.findall(r"worker \d: summary: connections (\d+)", srv.err)]
        assert sorted(served) != [0, 40], srv.err
        assert sum(served) == 40, srv.err
        assert len(served) == 2


def _group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process is left in the process group (polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)  # the poll interval, not a synchronisation
    return False


def test_workers_stop_when_the_parent_is_killed() -> None:
    args = ["tcp-server", "--service", "echo", "--workers", "2", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        port = int(srv.wait_for(r"listening on port (\d+) \(2 workers\)").group(1))
        pgid = srv.proc.pid  # the server leads its own session
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(LOOPBACK_TIMEOUT)
        assert _group_gone(pgid, LOOPBACK_TIMEOUT), "workers outlived their parent"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT).close()


@pytest.mark.parametrize(
    ("first", "second"),
    [(["--workers", "2"], ["--workers", "2"]), ([], ["--workers", "2"]), (["--workers", "2"], [])],
    ids=["workers-then-workers", "plain-then-workers", "workers-then-plain"],
)
def test_a_port_another_server_holds_is_refused(first: list[str], second: list[str]) -> None:
    base = ["tcp-server", "--host", "127.0.0.1", "-q"]
    with start_server(*base, "-p", "0", *first) as srv:
        port = int(srv.wait_for(r"listening on port (\d+)").group(1))
        result = subprocess.run(
            socketkit_argv(*base, "-p", str(port), *second),
            capture_output=True,
            text=True,
            timeout=LOOPBACK_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 4, result
        assert result.stderr == (
            f"socketkit: error: address already in use: 127.0.0.1:{port} "
            "(another server is running there?)\n"
        )
        assert srv.terminate() == 0
