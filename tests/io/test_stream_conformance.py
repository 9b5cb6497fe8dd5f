"""One conformance suite for every stream connection flavour (Trio's
``testing/_check_streams.py`` idea).

Each test gets a connected pair (``a`` connected out, ``b`` accepted) of one
flavour: the blocking layer over TCP/IPv4, TCP/IPv6 and Unix stream sockets,
and the asyncio layer over TCP (default loop and uvloop) and Unix. The asyncio
connections are driven through ``iosupport.AioFacade``, so every check is
written once against the blocking API shape that both layers share.

Real loopback sockets, port 0 read back, no sleeps: readiness comes from
``open_listener``/``start_server`` returning once bound, and every blocking
call has a timeout derived from ``LOOPBACK_TIMEOUT``. The descriptor count
is checked around every test by ``conftest.no_descriptor_leaks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import queue
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from iosupport import (
    LOOPBACK_TIMEOUT,
    SHORT_TIMEOUT,
    TIMEOUT_SLACK,
    AioFacade,
    AioRunner,
    Background,
    ipv6_loopback_available,
    short_socket_dir,
    sock_of,
    unix_sockets_available,
)

from socketkit import aio, sync
from socketkit.errors import (
    BrokenError,
    ClosedError,
    IncompleteReadError,
    MessageTooLargeError,
    SocketkitError,
    SocketTimeoutError,
)
from socketkit.framing import LengthPrefixedCodec, LineCodec

pytestmark = pytest.mark.timeout(30)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency where wheels exist
    uvloop = None  # type: ignore[assignment]
else:
    # libuv opens a process-wide pipe with its first loop and keeps it; open
    # it now so that the descriptor count around each test sees no change.
    uvloop.new_event_loop().close()


@dataclass(frozen=True)
class Flavour:
    layer: str  # "sync" or "aio"
    transport: str  # "tcp4", "tcp6" or "unix"
    loop: str = "asyncio"  # for "aio": "asyncio" or "uvloop"

    @property
    def id(self) -> str:
        suffix = "-uvloop" if self.loop == "uvloop" else ""
        return f"{self.layer}-{self.transport}{suffix}"

    @property
    def is_tcp(self) -> bool:
        return self.transport.startswith("tcp")


FLAVOURS = [
    Flavour("sync", "tcp4"),
    Flavour("sync", "tcp6"),
    Flavour("sync", "unix"),
    Flavour("aio", "tcp4"),
    Flavour("aio", "unix"),
    Flavour("aio", "tcp4", loop="uvloop"),
]


def _marks(flavour: Flavour) -> list[pytest.MarkDecorator]:
    marks = []
    if flavour.transport == "tcp6" and not ipv6_loopback_available():
        marks.append(pytest.mark.skip(reason="no IPv6 loopback (::1) here"))
    if flavour.transport == "unix" and not unix_sockets_available():
        marks.append(pytest.mark.skip(reason="no AF_UNIX on this platform"))
    if flavour.loop == "uvloop" and uvloop is None:
        marks.append(pytest.mark.skip(reason="uvloop is not installed"))
    return marks


@dataclass
class Pair:
    a: Any  # the connecting side
    b: Any  # the accepted side
    flavour: Flavour


def _endpoints(transport: str, directory: Path) -> tuple[str, Callable[[int | None], str]]:
    """Where to listen, and how to reach the listener once its port is known."""
    if transport == "tcp4":
        return "127.0.0.1:0", lambda port: f"127.0.0.1:{port}"
    if transport == "tcp6":
        return "[::1]:0", lambda port: f"[::1]:{port}"
    path = f"unix:{directory / 'stream.sock'}"
    return path, lambda _port: path


@contextlib.contextmanager
def _sync_pair(listen: str, target: Callable[[int | None], str]) -> Iterator[tuple[Any, Any]]:
    with sync.open_listener(listen, timeout=LOOPBACK_TIMEOUT) as listener:
        client = sync.connect(
            target(listener.port), connect_timeout=LOOPBACK_TIMEOUT, timeout=LOOPBACK_TIMEOUT
        )
        with client:
            server = listener.accept(timeout=LOOPBACK_TIMEOUT)
            with server:
                yield client, server


@contextlib.contextmanager
def _aio_pair(
    listen: str, target: Callable[[int | None], str], loop: str
) -> Iterator[tuple[Any, Any]]:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    runner = AioRunner(factory)
    try:
        accepted: queue.Queue[aio.Connection] = queue.Queue()
        release = asyncio.Event()

        async def handler(conn: aio.Connection) -> None:
            accepted.put(conn)
            await release.wait()  # the test uses the connection meanwhile

        async def start() -> aio.Server:
            return await aio.start_server(handler, listen, timeout=LOOPBACK_TIMEOUT)

        server = runner.run(start())
        try:
            client = runner.run(
                aio.connect(
                    target(server.port), connect_timeout=LOOPBACK_TIMEOUT, timeout=LOOPBACK_TIMEOUT
                )
            )
            try:
                accepted_conn = accepted.get(timeout=LOOPBACK_TIMEOUT)
                yield AioFacade(client, runner), AioFacade(accepted_conn, runner)
            finally:
                runner.run(client.aclose())
                # The handler returns and start_server's wrapper closes its side.
                runner.loop.call_soon_threadsafe(release.set)
        finally:
            runner.run(server.aclose())
    finally:
        runner.close()


@pytest.fixture(params=[pytest.param(f, id=f.id, marks=_marks(f)) for f in FLAVOURS])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    flavour: Flavour = request.param
    with short_socket_dir(tmp_path) as directory:
        listen, target = _endpoints(flavour.transport, directory)
        if flavour.layer == "sync":
            opened = _sync_pair(listen, target)
        else:
            opened = _aio_pair(listen, target, flavour.loop)
        with opened as (a, b):
            yield Pair(a, b, flavour)


def receive_until_eof(conn: Any) -> bytes:
    chunks = []
    while chunk := conn.receive_some():
        chunks.append(chunk)
    return b"".join(chunks)


def shrink_send_buffer(sender: Any, size: int = 64 * 1024) -> None:
    """A small kernel send buffer, so a large send must be written in many parts.

    Only the sender's: shrinking SO_RCVBUF after the handshake stalled TCP on
    loopback for tens of seconds under gVisor (the window shrinks under the
    peer's feet), with plain sockets as well; 64 KiB avoids a similar stall
    seen there with 4-32 KiB send buffers.
    """
    sock_of(sender).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


# -- names --------------------------------------------------------------------


def test_names(pair: Pair) -> None:
    a, b = pair.a, pair.b
    assert a.peer == b.local
    if pair.flavour.is_tcp:
        assert a.local == b.peer
        host = "127.0.0.1" if pair.flavour.transport == "tcp4" else "[::1]"
        assert a.peer.startswith(f"{host}:")
    else:
        assert a.peer.startswith("unix:/")
        assert b.peer == "unix:(unnamed)"


# -- sending and receiving ----------------------------------------------------


def test_send_all_of_4_mib_while_the_peer_reads(pair: Pair) -> None:
    a, b = pair.a, pair.b
    shrink_send_buffer(a)
    data = random.Random(4).randbytes(4 * 1024 * 1024)
    reads = []

    def read_all() -> bytes:
        got = bytearray()
        while len(got) < len(data):
            chunk = b.receive_some()
            assert chunk, f"end of stream after {len(got)} bytes"
            reads.append(len(chunk))
            got += chunk
        return bytes(got)

    reader = Background(read_all, name="reader")
    a.send_all(data)
    assert reader.result() == data
    assert len(reads) > 1  # the stream really arrived in parts


def test_receive_exactly_across_many_small_writes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    rng = random.Random(7)
    chunks = [rng.randbytes(rng.randint(1, 7)) for _ in range(300)]
    expected = b"".join(chunks)

    def write() -> None:
        for chunk in chunks:
            a.send_all(chunk)

    writer = Background(write, name="writer")
    first = b.receive_exactly(5)
    middle = b.receive_exactly(len(expected) - 10)
    last = b.receive_exactly(5)
    writer.result()
    assert first + middle + last == expected


def test_receive_calls_share_one_buffer(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"\x00\x00\x00\x03abcline one\r\nline two\nrest")
    a.shutdown_write()
    assert b.receive_exactly(4) == b"\x00\x00\x00\x03"
    assert b.receive_exactly(3) == b"abc"
    assert b.receive_line() == b"line one"
    assert b.receive_message(LineCodec()) == b"line two"
    assert receive_until_eof(b) == b"rest"
    assert b.at_eof


def test_receive_some_respects_max_bytes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"0123456789")
    a.shutdown_write()
    assert b.receive_some(3) == b"012"
    assert receive_until_eof(b) == b"3456789"


def test_receive_line_lf_and_crlf(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"one\ntwo\r\n\r\nhalf a\rline\nthree")
    a.shutdown_write()
    lines = [b.receive_line() for _ in range(5)]
    assert lines == [b"one", b"two", b"", b"half a\rline", b"three"]
    assert b.receive_line() is None  # a clean end of stream
    assert b.receive_line() is None


def test_receive_line_over_the_limit_without_a_newline(pair: Pair) -> None:
    # The peer never sends a newline: we must refuse, not wait or buffer for ever.
    a, b = pair.a, pair.b
    a.send_all(b"x" * 100)
    with pytest.raises(MessageTooLargeError) as info:
        b.receive_line(max_line_length=10)
    assert info.value.limit == 10
    assert info.value.remote is True


def test_receive_line_over_the_limit_with_a_newline(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"y" * 11 + b"\n")
    with pytest.raises(MessageTooLargeError):
        b.receive_line(max_line_length=10)


def test_receive_message_length_prefixed(pair: Pair) -> None:
    a, b = pair.a, pair.b
    codec = LengthPrefixedCodec()
    messages = [b"", b"abc", b"\n\r\x00", random.Random(3).randbytes(300_000), b"last"]

    def write() -> None:
        for message in messages:
            a.send_message(codec, message)
        a.shutdown_write()

    writer = Background(write, name="writer")
    received = [b.receive_message(codec) for _ in messages]
    assert received == messages
    assert b.receive_message(codec) is None
    writer.result()


def test_length_prefix_is_network_byte_order_on_the_wire(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_message(LengthPrefixedCodec(), b"abc")
    a.send_message(LengthPrefixedCodec(), b"z" * 0x0102)
    assert b.receive_exactly(7) == b"\x00\x00\x00\x03abc"
    assert struct.unpack("!I", b.receive_exactly(4)) == (0x0102,)


def test_oversized_frame_header_is_refused_at_once(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"\xff\xff\xff\xff")  # claims 4 GiB and sends nothing more
    with pytest.raises(MessageTooLargeError) as info:
        b.receive_message(LengthPrefixedCodec(1024))
    assert info.value.size == 0xFFFFFFFF


def test_truncated_frame_at_end_of_stream(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"\x00\x00\x00\x10only")
    a.shutdown_write()
    with pytest.raises(IncompleteReadError) as info:
        b.receive_message(LengthPrefixedCodec())
    assert info.value.partial == b"\x00\x00\x00\x10only"
    assert info.value.expected == 20


# -- end of stream ------------------------------------------------------------


def test_half_close_then_reply(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"request")
    a.shutdown_write()
    assert receive_until_eof(b) == b"request"  # b sees the end of a's stream...
    assert b.at_eof
    b.send_all(b"reply")  # ...and can still answer
    b.close()
    assert receive_until_eof(a) == b"reply"
    assert a.at_eof


def test_send_after_shutdown_write_is_closed(pair: Pair) -> None:
    a = pair.a
    a.shutdown_write()
    with pytest.raises(ClosedError):
        a.send_all(b"too late")


def test_receive_exactly_when_the_peer_closes_early(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"abc")
    a.close()
    with pytest.raises(IncompleteReadError) as info:
        b.receive_exactly(10)
    assert info.value.partial == b"abc"
    assert info.value.expected == 10
    assert isinstance(info.value, BrokenError)
    assert "after 3 of 10 bytes" in str(info.value)
    assert info.value.exit_code == 6


def test_reset_by_peer_is_broken(pair: Pair) -> None:
    if not pair.flavour.is_tcp:
        pytest.skip("only TCP has resets")
    a, b = pair.a, pair.b
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock_of(b).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    b.close()
    with pytest.raises(BrokenError) as info:
        a.receive_some()
    assert info.value.errno == errno.ECONNRESET
    assert not isinstance(info.value, IncompleteReadError)


# -- timeouts -----------------------------------------------------------------


def _assert_timely(started: float, limit: float) -> None:
    elapsed = time.monotonic() - started
    assert limit * 0.9 <= elapsed < limit + TIMEOUT_SLACK, elapsed


@pytest.mark.parametrize(
    "call",
    [
        lambda conn: conn.receive_some(timeout=SHORT_TIMEOUT),
        lambda conn: conn.receive_exactly(1, timeout=SHORT_TIMEOUT),
        lambda conn: conn.receive_line(timeout=SHORT_TIMEOUT),
        lambda conn: conn.receive_message(LengthPrefixedCodec(), timeout=SHORT_TIMEOUT),
    ],
    ids=["receive_some", "receive_exactly", "receive_line", "receive_message"],
)
def test_receive_timeout(pair: Pair, call: Callable[[Any], object]) -> None:
    started = time.monotonic()
    with pytest.raises(SocketTimeoutError) as info:
        call(pair.b)
    _assert_timely(started, SHORT_TIMEOUT)
    exc = info.value
    assert isinstance(exc, TimeoutError)
    assert exc.phase == "receive"
    assert exc.timeout == SHORT_TIMEOUT
    assert exc.exit_code == 5
    assert f"timed out after {SHORT_TIMEOUT:g} s" in str(exc)


def test_connection_timeout_is_the_default_for_each_call(pair: Pair) -> None:
    pair.b.timeout = SHORT_TIMEOUT
    started = time.monotonic()
    with pytest.raises(SocketTimeoutError):
        pair.b.receive_line()
    _assert_timely(started, SHORT_TIMEOUT)


def test_zero_timeout_is_a_timeout_not_an_os_error(pair: Pair) -> None:
    # timeout=0 asks "is anything there?"; with nothing there the answer is
    # a timeout, whatever the layer does underneath (a non-blocking socket
    # raises EAGAIN, which must not leak out as a generic error).
    with pytest.raises(SocketTimeoutError) as info:
        pair.b.receive_some(timeout=0)
    assert info.value.phase == "receive"


def test_bytes_received_before_a_timeout_are_kept(pair: Pair) -> None:
    a, b = pair.a, pair.b
    a.send_all(b"abc")
    with pytest.raises(SocketTimeoutError):
        b.receive_exactly(5, timeout=SHORT_TIMEOUT)
    a.send_all(b"de")
    assert b.receive_exactly(5) == b"abcde"
    a.send_all(b"par")
    with pytest.raises(SocketTimeoutError):
        b.receive_line(timeout=SHORT_TIMEOUT)
    a.send_all(b"tial\n")
    assert b.receive_line() == b"partial"
    a.shutdown_write()
    assert receive_until_eof(b) == b""


def test_send_timeout_when_the_peer_stops_reading(pair: Pair) -> None:
    a = pair.a  # pair.b never reads
    shrink_send_buffer(a)
    started = time.monotonic()
    with pytest.raises(SocketTimeoutError) as info:
        a.send_all(b"\0" * (16 * 1024 * 1024), timeout=SHORT_TIMEOUT)
    _assert_timely(started, SHORT_TIMEOUT)
    assert info.value.phase == "send"
    # Closing must not wait for the peer to take the rest.
    started = time.monotonic()
    a.close()
    assert time.monotonic() - started < TIMEOUT_SLACK


def test_close_with_unsent_data_is_bounded_by_the_timeout(pair: Pair) -> None:
    # asyncio keeps unsent bytes in user space and its close() waits until
    # they are written; a peer that never reads must not make aclose() hang.
    if pair.flavour.layer != "aio":
        pytest.skip("the blocking layer leaves unsent bytes to the kernel")
    a = pair.a
    shrink_send_buffer(a)

    async def write_without_drain() -> None:
        a.wrapped.writer.write(b"\0" * (16 * 1024 * 1024))

    a.timeout = SHORT_TIMEOUT
    a.runner.run(write_without_drain())
    started = time.monotonic()
    a.close()
    _assert_timely(started, SHORT_TIMEOUT)


# -- closing ------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda conn: conn.send_all(b"x"),
        lambda conn: conn.send_message(LineCodec(), b"x"),
        lambda conn: conn.receive_some(),
        lambda conn: conn.receive_exactly(1),
        lambda conn: conn.receive_line(),
        lambda conn: conn.receive_message(LengthPrefixedCodec()),
        lambda conn: conn.shutdown_write(),
    ],
    ids=[
        "send_all",
        "send_message",
        "receive_some",
        "receive_exactly",
        "receive_line",
        "receive_message",
        "shutdown_write",
    ],
)
def test_use_after_close(pair: Pair, call: Callable[[Any], object]) -> None:
    a = pair.a
    a.close()
    assert a.closed
    with pytest.raises(ClosedError) as info:
        call(a)
    assert "already closed" in str(info.value)
    assert info.value.exit_code == 1
    assert not isinstance(info.value, BrokenError)
    a.close()  # closing twice is fine


def test_context_manager_closes(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with a as entered:
        assert entered is a
        a.send_all(b"bye")
    assert a.closed
    assert receive_until_eof(b) == b"bye"


def test_context_manager_closes_on_error(pair: Pair) -> None:
    a, b = pair.a, pair.b
    with pytest.raises(KeyError), a:
        raise KeyError("boom")
    assert a.closed
    assert receive_until_eof(b) == b""


def test_errors_are_socketkit_errors(pair: Pair) -> None:
    # Whatever goes wrong on a connection, callers can catch one root.
    a, b = pair.a, pair.b
    a.close()
    for call in (lambda: b.receive_exactly(1), lambda: a.send_all(b"x")):
        with pytest.raises(SocketkitError):
            call()
