"""Batched datagram I/O (recvmmsg/sendmmsg) and the datagram engine on both paths.

The engine runs in-process in a thread's event loop, once with batches (Linux)
and once on the one-datagram-per-call path that every other platform takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from socketkit._mmsg import DatagramBatch
from socketkit.server import SERVICES, ServerLog, Service
from socketkit.server._engine import DatagramEngine
from socketkit.server._log import Stats
from socketkit.sync import open_datagram_client

from helpers import LOOPBACK_TIMEOUT, start_server

pytestmark = pytest.mark.timeout(60)

needs_mmsg = pytest.mark.skipif(not DatagramBatch.available(), reason="recvmmsg is Linux-only")


def _pair(family: int = socket.AF_INET) -> tuple[socket.socket, socket.socket]:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(LOOPBACK_TIMEOUT)
    return server, client


def _wait_readable(sock: socket.socket) -> None:
    ready, _, _ = select.select([sock], [], [], LOOPBACK_TIMEOUT)
    assert ready, "nothing arrived"


@needs_mmsg
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_batch_receives_echoes_and_replies(family: int) -> None:
    server, client = _pair(family)
    with server, client:
        batch = DatagramBatch(count=8, size=100)
        messages = [bytes([65 + i]) * (i + 1) for i in range(5)]
        for m in messages:
            client.sendto(m, server.getsockname())
        _wait_readable(server)
        n = batch.receive(server)
        # Loopback delivers in order; all five were queued before the call.
        assert n == 5
        assert [batch.data(i) for i in range(n)] == messages
        assert batch.total(n) == 15
        assert batch.longest(n) == 5
        sender = batch.address(0, family)
        assert sender[:2] == client.getsockname()[:2]
        assert batch.echo(server, n) == 5
        assert [client.recv(200) for _ in range(n)] == messages
        assert batch.reply(server, n, b"Message received") == 5
        assert [client.recv(200) for _ in range(n)] == [b"Message received"] * 5
        with pytest.raises(BlockingIOError):
            batch.receive(server)


@needs_mmsg
def test_batch_sends_its_slots_on_a_connected_socket() -> None:
    receiver, sender = _pair()
    with receiver, sender:
        sender.connect(receiver.getsockname())
        batch = DatagramBatch(count=8, size=32)
        for i in range(5):
            batch.slot(i)[:4] = bytes([i]) * 4
        assert batch.send(sender, 5, 4, wait=LOOPBACK_TIMEOUT) == 5
        receiver.settimeout(LOOPBACK_TIMEOUT)
        assert [receiver.recv(100) for _ in range(5)] == [bytes([i]) * 4 for i in range(5)]


@needs_mmsg
def test_batch_flags_a_datagram_longer_than_a_slot() -> None:
    server, client = _pair()
    with server, client:
        batch = DatagramBatch(count=4, size=101)
        client.sendto(b"x" * 150, server.getsockname())
        client.sendto(b"y" * 101, server.getsockname())
        _wait_readable(server)
        n = batch.receive(server)
        assert n == 2
        assert (batch.length(0), batch.truncated(0)) == (101, True)
        assert (batch.data(1), batch.truncated(1)) == (b"y" * 101, False)


@needs_mmsg
def test_batch_unix_datagram_addresses() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with server, client:
            server.bind(os.path.join(tmp, "s"))
            server.setblocking(False)
            client.bind(os.path.join(tmp, "c"))
            client.settimeout(LOOPBACK_TIMEOUT)
            client.sendto(b"hi", server.getsockname())
            _wait_readable(server)
            batch = DatagramBatch(count=2, size=10)
            n = batch.receive(server)
            assert batch.address(0, socket.AF_UNIX) == client.getsockname()
            assert batch.echo(server, n) == 1
            assert client.recv(10) == b"hi"


@contextlib.contextmanager
def _serving(engine: DatagramEngine) -> Iterator[list[Stats]]:
    """Run ``engine`` in a thread's event loop; stop it and join on exit."""
    loops: list[asyncio.AbstractEventLoop] = []
    stats: list[Stats] = []
    started = threading.Event()

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        started.set()
        stats.append(await engine.serve())

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    try:
        assert started.wait(LOOPBACK_TIMEOUT)
        yield stats
    finally:
        loops[0].call_soon_threadsafe(engine.stop)
        thread.join(LOOPBACK_TIMEOUT)
        assert not thread.is_alive()


def _engine(
    sock: socket.socket, batched: bool, service: str = "echo", **kw: object
) -> DatagramEngine:
    engine = DatagramEngine(sock, SERVICES[service](), log=ServerLog(verbose=False), **kw)  # type: ignore[arg-type]
    if not batched:
        engine._batch = None
    return engine


PATHS = [pytest.param(True, marks=needs_mmsg, id="batched"), pytest.param(False, id="per-call")]


@pytest.mark.parametrize("batched", PATHS)
def test_engine_echoes_every_datagram_from_many_senders(batched: bool) -> None:
    server, client = _pair()
    others = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    with server, client, contextlib.ExitStack() as stack:
        for o in others:
            stack.enter_context(o)
            o.bind(("127.0.0.1", 0))
            o.settimeout(LOOPBACK_TIMEOUT)
        engine = _engine(server, batched)
        target = server.getsockname()
        with _serving(engine) as stats:
            # Windows of 32 keep every socket buffer far from full on loopback.
            for round_ in range(10):
                for k, sender in enumerate([client, *others]):
                    sent = [f"{round_}:{k}:{i}".encode() * (i + 1) for i in range(32)]
                    for m in sent:
                        sender.sendto(m, target)
                    assert [sender.recv(4096) for _ in sent] == sent
        assert stats[0].datagrams_in == stats[0].datagrams_out == 960
        assert stats[0].bytes_in == stats[0].bytes_out


@pytest.mark.parametrize("batched", PATHS)
def test_engine_drops_oversize_and_keeps_serving(batched: bool) -> None:
    server, client = _pair()
    with server, client:
        engine = _engine(server, batched, max_datagram_size=100)
        with _serving(engine) as stats:
            client.sendto(b"x" * 101, server.getsockname())
            client.sendto(b"y" * 100, server.getsockname())
            assert client.recv(200) == b"y" * 100
        assert (stats[0].datagrams_in, stats[0].datagrams_out, stats[0].errors) == (2, 1, 1)


@pytest.mark.parametrize("batched", PATHS)
def test_engine_refuses_by_filter_and_answers_hello(batched: bool) -> None:
    server, client = _pair()
    with server, client:
        refused_port = client.getsockname()[1]
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with other:
            other.bind(("127.0.0.1", 0))
            other.settimeout(LOOPBACK_TIMEOUT)
            engine = _engine(
                server,
                batched,
                service="hello",
                accept_filter=lambda addr: "no" if addr[1] == refused_port else None,
            )
            with _serving(engine) as stats:
                client.sendto(b"one", server.getsockname())
                other.sendto(b"two", server.getsockname())
                assert other.recv(100) == b"Message received"
            client.settimeout(0.2)
            with pytest.raises(TimeoutError):
                client.recv(100)
        assert (stats[0].refused, stats[0].datagrams_out) == (1, 1)


@pytest.mark.parametrize("batched", PATHS)
def test_engine_stops_after_max_datagrams(batched: bool) -> None:
    server, client = _pair()
    with server, client:
        for m in (b"a", b"b", b"c", b"d"):
            client.sendto(m, server.getsockname())
        engine = _engine(server, batched, max_datagrams=2)
        done: list[Stats] = []
        thread = threading.Thread(target=lambda: done.append(asyncio.run(engine.serve())))
        thread.start()
        thread.join(LOOPBACK_TIMEOUT)
        assert not thread.is_alive()
        assert [client.recv(10) for _ in range(2)] == [b"a", b"b"]
        assert done[0].datagrams_in == 2


def test_traced_udp_server_shows_each_recvfrom_and_sendto() -> None:
    # Batches bypass the socket object; under --trace the engine keeps the
    # one-call path, so every datagram has its recvfrom and sendto lines.
    with start_server("udp-server", "--trace", "--once", "--host", "127.0.0.1", "-p", "0") as srv:
        port = srv.port()
        with open_datagram_client(f"127.0.0.1:{port}", timeout=LOOPBACK_TIMEOUT) as udp:
            assert udp.request(b"ping", timeout=LOOPBACK_TIMEOUT) == b"Message received"
        assert srv.wait() == 0
        assert re.search(r"recvfrom\(.*\) = 4", srv.err + srv.out)
        assert re.search(r"sendto\(.*\) = 16", srv.err + srv.out)


class _Upper(Service):
    """A service of one's own: the engine knows it only by what it says of itself."""

    name = "upper"

    def answer_datagram(self, data: bytes) -> bytes | None:
        return data.upper()


class _Mirror(Service):
    """Another: its datagram reply is the datagram, so whole batches go back untouched."""

    name = "mirror"
    echoes_datagrams = True


@pytest.mark.parametrize("batched", PATHS)
def test_engine_serves_a_service_of_ones_own(batched: bool) -> None:
    server, client = _pair()
    with server, client:
        engine = DatagramEngine(server, _Upper(), log=ServerLog(verbose=False))
        if not batched:
            engine._batch = None
        assert not engine._plain_echo
        with _serving(engine) as stats:
            for m in (b"one", b"two"):
                client.sendto(m, server.getsockname())
                assert client.recv(100) == m.upper()
        assert stats[0].datagrams_out == 2


@pytest.mark.parametrize("batched", PATHS)
def test_a_service_that_echoes_datagrams_takes_the_plain_echo_path(batched: bool) -> None:
    server, client = _pair()
    with server, client:
        engine = DatagramEngine(server, _Mirror(), log=ServerLog(verbose=False))
        if not batched:
            engine._batch = None
        assert engine._plain_echo
        with _serving(engine) as stats:
            sent = [b"x" * i for i in range(1, 33)]
            for m in sent:
                client.sendto(m, server.getsockname())
            assert [client.recv(100) for _ in sent] == sent
        assert stats[0].datagrams_in == stats[0].datagrams_out == 32
