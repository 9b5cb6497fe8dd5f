"""PROXY protocol on a real server, and the handler API in-process."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from socketkit.address import InetEndpoint
from socketkit.aio import Connection
from socketkit.framing.proxy import encode_v1, encode_v2
from socketkit.server import (
    HandlerService,
    ServerConfig,
    ServerLog,
    StreamEngine,
    run_stream_server,
)

from helpers import LOOPBACK_TIMEOUT, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
def test_proxy_header_names_the_real_client(encode) -> None:  # type: ignore[no-untyped-def]
    args = ["tcp-server", "--proxy-protocol", "-v", "--host", "127.0.0.1", "-p", "0"]
    with start_server(*args) as srv:
        port = srv.port()
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(encode(("203.0.113.9", 4242), ("127.0.0.1", port)) + b"Hello\n")
            assert s.recv(100) == b"Hello from server\n"
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"no header here\n")
            assert s.recv(100) == b""  # refused: no PROXY header
        assert srv.terminate() == 0
    assert "203.0.113.9:4242: connected" in srv.err
    assert "bad PROXY protocol header" in srv.err
    assert srv.out.count("Received:") == 1


def test_custom_handler_over_the_connection_api() -> None:
    async def shout(conn: Connection) -> None:
        while (line := await conn.receive_line(max_line_length=1024)) is not None:
            if line == b"boom":
                raise RuntimeError("handler bug")
            await conn.send_all(line.upper() + b"\n")

    ready = threading.Event()
    engines: list[StreamEngine] = []
    loops: list[asyncio.AbstractEventLoop] = []

    def on_ready(engine: StreamEngine) -> None:
        engines.append(engine)
        loops.append(asyncio.get_running_loop())
        ready.set()

    import io

    out, err = io.StringIO(), io.StringIO()
    config = ServerConfig(endpoint=InetEndpoint("127.0.0.1", 0), service=HandlerService(shout))
    thread = threading.Thread(
        target=run_stream_server,
        args=(config, ServerLog(out, err)),
        kwargs={"on_ready": on_ready, "handle_signals": False},
    )
    thread.start()
    try:
        assert ready.wait(LOOPBACK_TIMEOUT)
        port = engines[0].port
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"hello\nworld\n")
            got = b""
            while got.count(b"\n") < 2:
                got += s.recv(100)
            assert got == b"HELLO\nWORLD\n"
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"boom\n")
            assert s.recv(100) == b""  # that connection ends; the server goes on
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"again\n")
            assert s.recv(100) == b"AGAIN\n"
    finally:
        if loops:
            loops[0].call_soon_threadsafe(engines[0].stop)
        thread.join(LOOPBACK_TIMEOUT)
    assert not thread.is_alive()
    assert "handler failed: RuntimeError: handler bug" in err.getvalue()
    assert "summary: connections 3" in err.getvalue()
    assert "bytes_out 18," in err.getvalue()  # HELLO\nWORLD\n + AGAIN\n, counted for handlers too


def test_echo_after_proxy_header_counts_and_echoes_the_rest() -> None:
    args = ["tcp-server", "--service", "echo", "--proxy-protocol", "--host", "127.0.0.1"]
    with start_server(*args, "-p", "0") as srv:
        port = srv.port()
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(encode_v2(("203.0.113.9", 4242), ("127.0.0.1", port)) + b"same packet")
            assert s.recv(100) == b"same packet"  # the bytes after the header, in one read
            s.sendall(b"later")
            assert s.recv(100) == b"later"
        assert srv.terminate() == 0
    assert "bytes_out 16," in srv.err


_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])


@pytest.mark.parametrize("access", [["--allow", "203.0.113.0/24"], ["--deny", "127.0.0.0/8"]])
@pytest.mark.parametrize(
    "header", [b"PROXY UNKNOWN\r\n", _V2_LOCAL], ids=["v1-unknown", "v2-local"]
)
def test_proxy_header_without_source_is_judged_by_the_real_peer(
    access: list[str], header: bytes
) -> None:
    """A header naming no client (a balancer's health check) cannot bypass --allow/--deny:
    the connection's own address is checked instead."""
    args = ["tcp-server", "--proxy-protocol", "--host", "127.0.0.1", "-p", "0", *access]
    with start_server(*args) as srv:
        port = srv.port()
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(header + b"Hello\n")
            assert s.recv(100) == b""
        assert srv.terminate() == 0
    assert "refused" in srv.err
    assert "Received:" not in srv.out
