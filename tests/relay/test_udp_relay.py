"""The UDP fork relay (``udp-listen:P,fork udp:H:Q``) in-process, on both of its paths.

The relay runs in a thread's event loop, once with batches (recvmmsg/sendmmsg,
Linux) and once on the one-datagram-per-call path that other platforms and
``--trace`` take. The upstream is a loopback echo in a thread that records
where each datagram came from (one upstream socket per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from socketkit._mmsg import DatagramBatch
from socketkit.access import AccessList
from socketkit.relay._datagram import DatagramRelay, _Client
from socketkit.relay._grammar import parse_relay_address
from socketkit.relay._sides import OpenOptions
from socketkit.server import ServerLog, Stats

from helpers import LOOPBACK_TIMEOUT

pytestmark = pytest.mark.timeout(60)

needs_mmsg = pytest.mark.skipif(not DatagramBatch.available(), reason="recvmmsg is Linux-only")
PATHS = [pytest.param(True, marks=needs_mmsg, id="batched"), pytest.param(False, id="per-call")]
try:
    from uvloop import new_event_loop as new_uvloop
except ImportError:  # the relay runs on asyncio's own loop there
    new_uvloop = None  # type: ignore[assignment]
#: The loops the relay runs on: asyncio's own, and uvloop where it is installed.
LOOPS = [
    pytest.param(None, id="asyncio"),
    pytest.param(
        new_uvloop,
        marks=pytest.mark.skipif(new_uvloop is None, reason="uvloop is not installed"),
        id="uvloop",
    ),
]
#: The largest UDP payload over IPv4.
LARGEST = 65507


class _Echo:
    """A UDP echo on loopback, in a thread; ``sources`` holds every sender seen."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sources: set[object] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)  # polls the stop flag
            if ready:
                data, addr = self.sock.recvfrom(65536)
                self.sources.add(addr)
                self.sock.sendto(data, addr)

    def __enter__(self) -> _Echo:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(LOOPBACK_TIMEOUT)
        self.sock.close()


@contextlib.contextmanager
def _relaying(
    upstream_port: int,
    batched: bool,
    idle_timeout: float = 30.0,
    access: AccessList | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Iterator[tuple[DatagramRelay, tuple[str, int], list[Stats]]]:
    """A fork relay to ``upstream_port`` in a thread's event loop: (relay, its address, stats)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    relay = DatagramRelay(
        sock,
        parse_relay_address(f"udp:127.0.0.1:{upstream_port}"),
        OpenOptions(),
        log=ServerLog(verbose=False),
        access=access or AccessList(),
        idle_timeout=idle_timeout,
    )
    if not batched:
        relay._inbound = relay._outbound = None
    assert relay.batched is batched
    loops: list[asyncio.AbstractEventLoop] = []
    stats: list[Stats] = []
    started = threading.Event()

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        started.set()
        stats.append(await relay.serve())

    def run() -> None:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert started.wait(LOOPBACK_TIMEOUT)
        yield relay, sock.getsockname(), stats
    finally:
        loops[0].call_soon_threadsafe(relay.stop)
        thread.join(LOOPBACK_TIMEOUT)
        assert not thread.is_alive()
        sock.close()


def _clients(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(LOOPBACK_TIMEOUT)
        socks.append(s)
    return socks


def _until(condition: object, what: str) -> None:
    """Poll ``condition()`` until true, within the loopback deadline."""
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)  # polling interval, not a synchronisation


@pytest.mark.parametrize("loop_factory", LOOPS)
@pytest.mark.parametrize("batched", PATHS)
def test_relay_keeps_every_datagram_whole_and_in_order_per_client(
    batched: bool, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
) -> None:
    """Three clients, windows of 32 sent at once: each gets its own datagrams back,
    byte for byte and in order, through an upstream socket of its own."""
    with (
        _Echo() as echo,
        _relaying(echo.port, batched, loop_factory=loop_factory) as (
            relay,
            target,
            stats,
        ),
    ):
        clients = _clients(3)
        with contextlib.ExitStack() as stack:
            for c in clients:
                stack.enter_context(c)
            total = 0
            for round_ in range(10):
                windows = []
                for k, client in enumerate(clients):
                    # Sizes 1..~1.4 KiB, contents unique per client, round and index.
                    sent = [f"{round_}:{k}:{i};".encode() * (i * 3 + 1) for i in range(32)]
                    windows.append(sent)
                    for m in sent:
                        client.sendto(m, target)
                for client, sent in zip(clients, windows, strict=True):
                    assert [client.recv(65536) for _ in sent] == sent
                    total += sum(map(len, sent))
            assert len(echo.sources) == 3  # one upstream socket per client
            assert len(relay.clients) == 3
    assert (stats[0].datagrams_in, stats[0].datagrams_out) == (960, 960)
    assert stats[0].bytes_in == stats[0].bytes_out == total
    assert (stats[0].connections, stats[0].errors) == (3, 0)


@pytest.mark.parametrize("batched", PATHS)
def test_relay_moves_the_largest_datagram_whole(batched: bool) -> None:
    """A 65,507-byte datagram (IPv4's largest) between small ones, both ways."""
    with _Echo() as echo, _relaying(echo.port, batched) as (_relay, target, stats):
        (client,) = _clients(1)
        with client:
            big = bytes(range(256)) * (LARGEST // 256) + b"!" * (LARGEST % 256)
            sent = [b"before", big, b"after", big[::-1]]
            for m in sent:
                client.sendto(m, target)
            assert [client.recv(65536) for _ in sent] == sent
    assert stats[0].bytes_in == stats[0].bytes_out == sum(map(len, sent))


@pytest.mark.parametrize("batched", PATHS)
def test_relay_reclaims_an_idle_client_and_serves_it_again(batched: bool) -> None:
    """After the idle timeout the client's upstream socket is closed; its next
    datagram opens a new one."""
    with _Echo() as echo, _relaying(echo.port, batched, idle_timeout=0.2) as (relay, target, stats):
        (client,) = _clients(1)
        with client:
            client.sendto(b"first", target)
            assert client.recv(100) == b"first"
            _until(lambda: not relay.clients, "the idle client was not reclaimed")
            client.sendto(b"second", target)
            assert client.recv(100) == b"second"
            assert len(echo.sources) == 2  # a new upstream socket the second time
    assert (stats[0].connections, stats[0].datagrams_out) == (2, 2)


@pytest.mark.parametrize("batched", PATHS)
def test_relay_refuses_by_access_list(batched: bool) -> None:
    refused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        refused.bind(("127.0.0.2", 0))  # all of 127/8 is loopback on Linux, not everywhere
    except OSError:
        refused.close()
        pytest.skip("127.0.0.2 is not a local address here")
    deny = AccessList.from_strings(deny=["127.0.0.2"])
    with _Echo() as echo, _relaying(echo.port, batched, access=deny) as (_relay, target, stats):
        (admitted,) = _clients(1)
        with refused, admitted:
            refused.sendto(b"no", target)
            admitted.sendto(b"yes", target)
            assert admitted.recv(100) == b"yes"
            refused.settimeout(0.2)
            with pytest.raises(TimeoutError):
                refused.recv(100)
            assert len(echo.sources) == 1
    assert (stats[0].connections, stats[0].refused) == (1, 1)
    assert (stats[0].datagrams_in, stats[0].datagrams_out) == (2, 1)


def test_a_datagram_waits_behind_those_queued_while_the_upstream_opened() -> None:
    """One-call path: the upstream's transport exists (``connection_made``) before
    the queue is sent; a datagram arriving in between must not overtake it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        relay = DatagramRelay(
            sock,
            parse_relay_address("udp:127.0.0.1:9"),
            OpenOptions(),
            log=ServerLog(verbose=False),
            access=AccessList(),
            idle_timeout=30.0,
        )
        client = _Client(relay, ("127.0.0.1", 5), ("127.0.0.1", 5))
        sent: list[bytes] = []

        class Transport:
            def sendto(self, data: bytes) -> None:
                sent.append(data)

        client.send(b"first")  # the upstream is being opened: queued
        client.connection_made(Transport())  # type: ignore[arg-type]
        client.send(b"second")
        assert (sent, client.pending) == ([], [b"first", b"second"])
