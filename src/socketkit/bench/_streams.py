"""The data streams of a test, shared by the bench client and server.

A ``Stream`` is one TCP connection or one connected UDP socket with the id
iperf3 gives it (1, 3, 4, 5, ...: ``iperf_add_stream`` skips 2) and its
direction from this side's point of view. The worker functions move the
bytes and keep the counters the sampler reads (plain ints, written by one
thread, read by another: a torn read is impossible in CPython).

Stopping: a sender stops when ``Run.stop`` is set, its deadline passes or the
byte/block budget is spent. A receiver reads until end of stream, or, once
``Stream.stop`` is set, until it holds ``Stream.target`` (the bytes or the
datagrams the far side says it sent), or the drain deadline passes (TCP),
or the socket stays quiet for ``POLL_INTERVAL`` (UDP: the rest was lost),
so the two ends' counts agree exactly whenever the transport delivered
everything.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._mmsg import DatagramBatch
from ..errors import BrokenError, MessageTooLargeError, SocketkitError, SocketTimeoutError
from ..sync import Connection, DatagramSocket
from ._protocol import ControlProtocol, Event, NeedData, Results, StreamResult, UdpHeader

__all__ = [
    "Budget",
    "IntervalSample",
    "Run",
    "Stream",
    "UdpStats",
    "run_stream",
    "sample_intervals",
    "stream_ids",
]

#: Bytes asked of one receive on a TCP stream.
RECEIVE_SIZE = 256 * 1024
#: Seconds one blocking receive waits before looking at the stop flags again.
POLL_INTERVAL = 0.1
#: Seconds a send may block (a receiver that stopped reading) before the stream fails.
SEND_TIMEOUT = 30.0
#: Seconds a receiver keeps reading after the test for bytes still in flight.
DRAIN_TIMEOUT = 5.0
#: UDP without a bitrate: iperf3's default of 1 Mbit/s per stream.
DEFAULT_UDP_BITRATE = 1024 * 1024


def stream_ids(count: int) -> list[int]:
    """iperf3's stream ids: 1, then 3, 4, 5... (``iperf_add_stream``)."""
    return [1 if i == 0 else i + 2 for i in range(count)]


class UdpStats:
    """One UDP stream's receiver figures, computed as iperf3 does.

    Loss (``iperf_udp_recv``): a sequence number above the next expected
    counts the gap as lost; one below it is out of order and takes one back
    from the lost count. Jitter (RFC 3550 section 6.4.1, RFC 1889 A.8): with
    transit = arrival - send time, J += (|D| - J) / 16 for the difference D
    of consecutive transits; only differences matter, so the two clocks need
    not agree.
    """

    __slots__ = ("bytes", "highest", "jitter_ns", "lost", "out_of_order", "packets", "transit")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.highest = 0
        self.lost = 0
        self.out_of_order = 0
        self.jitter_ns = 0.0
        self.transit: int | None = None

    def add(self, seq: int, sent_ns: int, arrival_ns: int, size: int) -> None:
        self.packets += 1
        self.bytes += size
        if seq > self.highest:
            self.lost += seq - self.highest - 1
            self.highest = seq
        else:
            self.out_of_order += 1
            if self.lost > 0:
                self.lost -= 1
        transit = arrival_ns - sent_ns
        if self.transit is not None:
            self.jitter_ns += (abs(transit - self.transit) - self.jitter_ns) / 16.0
        self.transit = transit


class Budget:
    """A byte count shared by the sending streams (-n, or -k blocks times -l)."""

    def __init__(self, total: int) -> None:
        self._left = total
        self._lock = threading.Lock()

    def claim(self, n: int) -> int:
        """Take up to ``n`` bytes; 0 once the budget is spent."""
        with self._lock:
            n = min(n, self._left)
            self._left -= n
            return n


@dataclass(eq=False)
class Stream:
    """One data stream and its running figures."""

    id: int
    sending: bool
    conn: Connection | None = None
    dgram: DatagramSocket | None = None
    bytes: int = 0
    packets: int = 0
    skipped: int = 0
    seconds: float = 0.0
    udp: UdpStats | None = None
    error: str | None = None
    #: Receiver: stop once ``target`` is reached (or at end of stream).
    stop: bool = False
    target: int | None = None
    #: Where the stream runs, for the reports.
    local: tuple[str, int] = ("", 0)
    remote: tuple[str, int] = ("", 0)
    fd: int = -1

    @property
    def sock(self) -> socket.socket:
        holder = self.conn if self.conn is not None else self.dgram
        assert holder is not None
        return holder.socket

    def close(self) -> None:
        for holder in (self.conn, self.dgram):
            if holder is not None:
                holder.close()


@dataclass(eq=False)
class Run:
    """What the workers of one test share: settings, the stop signal, the budget."""

    length: int
    udp: bool
    rate: float = 0.0  # bits per second per stream; 0: unlimited (TCP)
    deadline: float = float("inf")  # monotonic time the senders stop at
    budget: Budget | None = None
    counters_64bit: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    #: Set when the test should end early: a budget spent, a receive count reached.
    end_now: threading.Event = field(default_factory=threading.Event)
    receive_goal: int = 0  # end once the receiving streams hold this many bytes (-n -R)
    streams: list[Stream] = field(default_factory=list)
    simulate_loss: float = 0.0
    seed: int = 0
    start: float = 0.0
    #: Senders wait for their data to be acknowledged when they stop (an iperf3 peer).
    flush_on_stop: bool = False

    def sending_done(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline


def _pace(start: float, sent_bytes: int, rate_bytes: float, run: Run) -> None:
    """Sleep until ``sent_bytes`` is due at ``rate_bytes`` per second (or the stop)."""
    delay = start + sent_bytes / rate_bytes - time.monotonic()
    if delay > 0:
        run.stop.wait(delay)


def run_stream(stream: Stream, run: Run) -> None:
    """Run one stream to its end; errors end up in ``stream.error``, never raised."""
    start = time.monotonic()
    try:
        if stream.sending:
            (_udp_send if run.udp else _tcp_send)(stream, run, start)
        else:
            (_udp_receive if run.udp else _tcp_receive)(stream, run, start)
    except (SocketkitError, OSError) as exc:
        stream.error = str(exc) or type(exc).__name__
        run.end_now.set()
    finally:
        if not stream.seconds:
            stream.seconds = time.monotonic() - start


def _tcp_send(stream: Stream, run: Run, start: float) -> None:
    assert stream.conn is not None
    block = memoryview(bytes(run.length))
    rate = run.rate / 8
    while not run.sending_done():
        n = run.budget.claim(run.length) if run.budget is not None else run.length
        if n == 0:
            run.end_now.set()
            break
        if rate:
            _pace(start, stream.bytes, rate, run)
        stream.conn.send_all(block[:n], timeout=SEND_TIMEOUT)
        stream.bytes += n
    stream.seconds = time.monotonic() - start
    if run.flush_on_stop:
        wait_sent(stream.sock, DRAIN_TIMEOUT)


def _tcp_receive(stream: Stream, run: Run, start: float) -> None:
    conn = stream.conn
    assert conn is not None
    drain_until = float("inf")
    while True:
        if stream.stop:
            if stream.target is not None and stream.bytes >= stream.target:
                break
            drain_until = min(drain_until, time.monotonic() + DRAIN_TIMEOUT)
            if time.monotonic() > drain_until:
                break
        try:
            data = conn.receive_some(RECEIVE_SIZE, timeout=POLL_INTERVAL)
        except SocketTimeoutError:
            continue
        if not data:
            break
        stream.bytes += len(data)
        stream.seconds = time.monotonic() - start  # until the last byte, not the drain
        if run.receive_goal and _received(run) >= run.receive_goal:
            run.end_now.set()


def _received(run: Run) -> int:
    return sum(s.bytes for s in run.streams if not s.sending)


def _udp_send(stream: Stream, run: Run, start: float) -> None:
    dgram = stream.dgram
    assert dgram is not None
    sock = dgram.socket
    # Linux: many datagrams per system call. Not for a traced socket (the
    # trace shows each send) nor for the tests' seeded loss.
    if DatagramBatch.available() and type(sock) is socket.socket and not run.simulate_loss:
        _udp_send_batched(stream, run, start, sock)
        return
    size = run.length
    packet = bytearray(size)
    rate = (run.rate or DEFAULT_UDP_BITRATE) / 8
    rng = random.Random(run.seed * 1000 + stream.id)
    seq = 0
    while not run.sending_done():
        if run.budget is not None and run.budget.claim(size) < size:
            run.end_now.set()
            break
        _pace(start, seq * size, rate, run)
        seq += 1
        stream.packets = seq
        if run.simulate_loss and rng.random() < run.simulate_loss:
            stream.skipped += 1
            continue
        UdpHeader.pack_into(packet, seq, time.monotonic_ns(), run.counters_64bit)
        try:
            dgram.send(bytes(packet))
        except BrokenError:
            continue  # an ICMP error from an earlier datagram: this one is lost, as UDP may
        stream.bytes += size
    stream.seconds = time.monotonic() - start


#: Datagrams per sendmmsg call of a UDP sender.
SEND_BATCH = 64


def _udp_send_batched(stream: Stream, run: Run, start: float, sock: socket.socket) -> None:
    """``_udp_send`` with sendmmsg: the datagrams due now (up to ``SEND_BATCH``) in one call.

    Pacing is by batch: the datagrams whose time has come go out together,
    stamped with the time of the call, then the sender sleeps until the next
    one is due. What the kernel refuses (an ICMP error from an earlier
    datagram) is lost, as with ``send``.
    """
    size = run.length
    rate = (run.rate or DEFAULT_UDP_BITRATE) / 8
    batch = DatagramBatch(SEND_BATCH, size)
    slots = [batch.slot(i) for i in range(SEND_BATCH)]
    pack = UdpHeader.pack_into
    wide = run.counters_64bit
    seq = 0
    while not run.sending_done():
        due = int((time.monotonic() - start) * rate / size) + 1 - seq
        if due <= 0:
            _pace(start, seq * size, rate, run)
            continue
        n = min(due, SEND_BATCH)
        if run.budget is not None:
            n = run.budget.claim(n * size) // size
            if n == 0:
                run.end_now.set()
                break
        now = time.monotonic_ns()
        for i in range(n):
            pack(slots[i], seq + i + 1, now, wide)
        sent = batch.send(sock, n, size, wait=SEND_TIMEOUT)
        seq += n
        stream.packets = seq
        stream.bytes += sent * size
    stream.seconds = time.monotonic() - start


def _udp_receive(stream: Stream, run: Run, start: float) -> None:
    dgram = stream.dgram
    assert dgram is not None
    sock = dgram.socket
    if DatagramBatch.available() and type(sock) is socket.socket:
        _udp_receive_batched(stream, run, start, sock)
        return
    stats = stream.udp = stream.udp or UdpStats()
    while True:
        if stream.stop and stream.target is not None and stats.highest >= stream.target:
            break
        try:
            data = dgram.receive(timeout=POLL_INTERVAL)
        except SocketTimeoutError:
            if stream.stop:
                break  # quiet after the end: what is missing now was lost
            continue
        except (MessageTooLargeError, BrokenError):
            continue  # not one of the test's datagrams; an ICMP error
        _count_datagram(stats, data, time.monotonic_ns(), run.counters_64bit)
        stream.bytes = stats.bytes
        stream.packets = stats.packets
        stream.seconds = time.monotonic() - start


def _udp_receive_batched(stream: Stream, run: Run, start: float, sock: socket.socket) -> None:
    """``_udp_receive`` with recvmmsg: every datagram waiting (up to a batch) per call."""
    stats = stream.udp = stream.udp or UdpStats()
    wide = run.counters_64bit
    # One byte over the test's length: a longer datagram is not the test's.
    limit = max(run.length, UdpHeader.size(wide))
    batch = DatagramBatch(SEND_BATCH, limit + 1)
    slots = [batch.slot(i) for i in range(SEND_BATCH)]
    while True:
        if stream.stop and stream.target is not None and stats.highest >= stream.target:
            break
        ready, _, _ = select.select([sock], [], [], POLL_INTERVAL)
        if not ready:
            if stream.stop:
                break  # quiet after the end: what is missing now was lost
            continue
        try:
            n = batch.receive(sock)
        except OSError:
            continue  # nothing after all, or an ICMP error from an earlier datagram
        now = time.monotonic_ns()
        for i in range(n):
            length = batch.length(i)
            if length <= limit:
                _count_datagram(stats, slots[i][:length], now, wide)
        stream.bytes = stats.bytes
        stream.packets = stats.packets
        stream.seconds = time.monotonic() - start


def _count_datagram(
    stats: UdpStats, data: bytes | memoryview, received_ns: int, counters_64bit: bool
) -> None:
    """One received datagram into the stream's figures (not the test's: ignored)."""
    header = UdpHeader.unpack(data, counters_64bit)
    if header is not None:
        sent_ns = header.seconds * 1_000_000_000 + header.microseconds * 1000
        stats.add(header.sequence, sent_ns, received_ns, len(data))


# -- what the kernel knows ----------------------------------------------------------
_TCP_INFO_TOTAL_RETRANS = struct.Struct("=I")
#: Offset of ``tcpi_total_retrans`` in Linux's ``struct tcp_info`` (linux/tcp.h).
_TOTAL_RETRANS_OFFSET = 100


def tcp_retransmits(sock: socket.socket) -> int | None:
    """The connection's retransmitted segments (Linux TCP_INFO), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < _TOTAL_RETRANS_OFFSET + 4:
        return None
    return int(_TCP_INFO_TOTAL_RETRANS.unpack_from(info, _TOTAL_RETRANS_OFFSET)[0])


def wait_sent(sock: socket.socket, timeout: float) -> None:
    """Wait until the peer acknowledged everything written (Linux SIOCOUTQ), or ``timeout``.

    Used before telling an iperf3 peer the test ended: iperf3 closes its
    streams on TEST_END and drops what it has not read, so the sender waits
    for its data to leave before the control message overtakes it.
    """
    if not sys.platform.startswith("linux"):
        return
    import fcntl
    import termios

    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf)
        except OSError:
            return
        if struct.unpack("=i", buf)[0] == 0:
            return
        time.sleep(0.001)  # the kernel offers no wakeup for an empty send queue


def start_workers(streams: list[Stream], run: Run) -> list[threading.Thread]:
    run.streams = streams
    threads = [
        threading.Thread(target=run_stream, args=(s, run), daemon=True, name=f"stream-{s.id}")
        for s in streams
    ]
    for t in threads:
        t.start()
    return threads


def join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


#: Receive buffer asked for a UDP stream when -w does not say: a Python
#: receiver that loses the CPU for a few milliseconds at 100 Mbit/s needs
#: more than the default 208 KiB of slack (the kernel caps it at rmem_max).
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024


def set_window(sock: socket.socket, window: int) -> None:
    """-w: both socket buffers; without it a UDP socket still gets ``UDP_RECEIVE_BUFFER``."""
    with contextlib.suppress(OSError):
        if window:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, window)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window)
        elif sock.type == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)


@dataclass(slots=True)
class IntervalSample:
    """What each stream (or latency connection) did between ``start`` and ``end`` seconds."""

    start: float
    end: float
    bytes: list[int]
    requests: list[int]
    omitted: bool = False


def with_omit(
    done: Callable[[float], bool],
    streams: list[Stream],
    omit_until: float,
    omitted: dict[int, int],
) -> Callable[[float], bool]:
    """``done`` for ``sample_intervals`` that also records, into ``omitted``, each
    stream's bytes when the omitted seconds (-O) end at ``omit_until``."""

    def wrapped(timeout: float) -> bool:
        if omitted:
            return done(timeout)
        finished = done(min(timeout, max(0.0, omit_until - time.monotonic())))
        if time.monotonic() >= omit_until:
            omitted.update({s.id: s.bytes for s in streams})
        return finished

    return wrapped


def sample_intervals(
    read: Callable[[], tuple[list[int], list[int]]],
    start: float,
    interval: float,
    done: Callable[[float], bool],
    on_interval: Callable[[IntervalSample], None] | None = None,
    omit: float = 0.0,
) -> list[IntervalSample]:
    """Read the counters every ``interval`` seconds until ``done``; return the intervals.

    ``read()`` gives the running (bytes, requests) per stream; ``done(timeout)``
    waits up to ``timeout`` seconds for the end and says whether it came.
    Intervals ending within the first ``omit`` seconds are marked omitted.
    """
    samples: list[IntervalSample] = []
    last_b, last_r = read()
    last_t = 0.0
    tick = 1
    while True:
        due = start + tick * interval
        finished = done(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        if now < due and not finished:
            continue
        b, r = read()
        t = now - start
        db = [x - y for x, y in zip(b, last_b, strict=True)]
        dr = [x - y for x, y in zip(r, last_r, strict=True)]
        # A sliver after the last full interval (the streams' own ending) is
        # folded into the previous one rather than shown on its own.
        if finished and samples and t - last_t < interval / 4:
            prev = samples[-1]
            prev.end = t
            prev.bytes = [x + y for x, y in zip(prev.bytes, db, strict=True)]
            prev.requests = [x + y for x, y in zip(prev.requests, dr, strict=True)]
        elif t - last_t > 0.001 or not samples:
            sample = IntervalSample(last_t, t, db, dr, omitted=t <= omit + 0.001)
            samples.append(sample)
            if on_interval is not None:
                on_interval(sample)
        last_b, last_r, last_t = b, r, t
        tick = int(t / interval) + 1
        if finished:
            return samples


def control_event(conn: Connection, proto: ControlProtocol, timeout: float | None) -> Event:
    """The next control message: feed ``proto`` from ``conn`` until it has one.

    Raises:
        SocketTimeoutError: nothing whole within ``timeout`` seconds of silence.
        ProtocolError, RefusedError, BrokenError: see ``ControlProtocol.next_event``.
    """
    while True:
        event = proto.next_event()
        if not isinstance(event, NeedData):
            return event
        proto.receive_data(conn.receive_some(timeout=timeout))


def note_addresses(stream: Stream) -> None:
    """Record the stream's descriptor and both addresses for the reports."""
    sock = stream.sock
    stream.fd = sock.fileno()
    try:
        local, remote = sock.getsockname(), sock.getpeername()
    except OSError:
        return
    stream.local = (plain_host(str(local[0])), int(local[1]))
    stream.remote = (plain_host(str(remote[0])), int(remote[1]))


def plain_host(host: str) -> str:
    """``::ffff:1.2.3.4`` (an IPv4 peer of a dual-stack socket) as ``1.2.3.4``."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def cpu_percent(before: os.times_result, wall0: float) -> tuple[float, float, float]:
    """This process's CPU use since ``before``: total, user, system, in % of one core."""
    after = os.times()
    wall = max(time.monotonic() - wall0, 1e-9)
    user = 100 * (after.user - before.user) / wall
    system = 100 * (after.system - before.system) / wall
    return user + system, user, system


def stream_results(
    streams: list[Stream],
    cpu: tuple[float, float, float],
    retransmits: dict[int, int],
    omitted: dict[int, int] | None = None,
) -> Results:
    """This side's results, as iperf3's ``send_results`` writes them.

    A sending stream reports what it sent (UDP: datagrams sent as
    ``packets``); a receiving one what it received (UDP: the highest
    sequence number as ``packets``, the lost count as ``errors``, jitter in
    seconds), each less what moved in the omitted seconds.
    """
    omitted = omitted or {}
    out = []
    for s in streams:
        stats = None if s.sending else s.udp
        out.append(
            StreamResult(
                id=s.id,
                bytes=s.bytes - omitted.get(s.id, 0),
                retransmits=retransmits.get(s.id, -1) if s.sending else -1,
                jitter=stats.jitter_ns / 1e9 if stats else 0.0,
                errors=stats.lost if stats else 0,
                packets=s.packets if s.sending else (stats.highest if stats else 0),
                start_time=0.0,
                end_time=s.seconds,
            )
        )
    sends = any(s.sending for s in streams)
    return Results(
        streams=tuple(out),
        cpu_util_total=cpu[0],
        cpu_util_user=cpu[1],
        cpu_util_system=cpu[2],
        sender_has_retransmits=(1 if retransmits else 0) if sends else -1,
    )
