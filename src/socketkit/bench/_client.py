"""``socketkit bench client``: iperf3's client, and a latency client for echo servers.

Strategy (throughput, TCP or UDP): one control connection speaks iperf3's
protocol (``_protocol.ControlProtocol``) with any iperf3 3.x server or
``socketkit bench server``; the streams are opened in iperf3's order (the
client's sending streams first), each run by a thread (``_streams``), and a
sampler reads their counters every interval. At the end:

- sending streams stop, then wait until the kernel saw their data
  acknowledged: iperf3's server closes its streams on TEST_END and drops what
  it has not read, so TEST_END must not overtake the data;
- receiving streams read on after TEST_END until the server closes them, so
  every byte the server counts as sent is counted here as received;
- results are exchanged; the document has both sides' figures.

Latency (``--latency``): request/response ping-pong with ``depth`` requests in
flight per connection, timed into a histogram. It needs an echo: any echo
service, or ``socketkit bench server``, which the first bytes (``ECHO_HELLO``)
switch to echoing. iperf3's protocol has no echo; an iperf3 server answers
the hello with a state byte and the client says so instead of measuring.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from .. import sync
from ..address import InetEndpoint
from ..errors import (
    BrokenError,
    SettingError,
    SocketkitError,
    SocketTimeoutError,
)
from ._histogram import Histogram
from ._protocol import (
    DEFAULT_TCP_BLOCK,
    DEFAULT_UDP_BLOCK,
    ECHO_HELLO,
    MAX_TCP_BLOCK,
    MAX_UDP_BLOCK,
    MIN_UDP_BLOCK,
    UDP_CONNECT_MSG,
    ControlProtocol,
    Event,
    ProtocolError,
    RefusedError,
    ResultsEvent,
    State,
    StateEvent,
    TestParams,
    is_udp_connect_reply,
    make_cookie,
)
from ._report import build_document, start_section
from ._streams import (
    Budget,
    IntervalSample,
    Run,
    Stream,
    control_event,
    cpu_percent,
    join_all,
    note_addresses,
    sample_intervals,
    set_window,
    start_workers,
    stream_ids,
    stream_results,
    tcp_retransmits,
    with_omit,
)

__all__ = ["BenchConfig", "run_bench"]

#: Default request size of the latency test.
DEFAULT_LATENCY_LENGTH = 64
#: Seconds to wait for the server at each step of the control exchange.
CONTROL_TIMEOUT = 10.0
#: Seconds the first answer may take: a server that says nothing is not iperf3.
FIRST_ANSWER_TIMEOUT = 5.0
#: Seconds the streams get to finish after the test (the last bytes in flight).
END_TIMEOUT = 10.0
#: Seconds between the last TCP byte acknowledged and TEST_END (see ``_end_senders``).
DRAIN_GRACE = 0.05


@dataclass(slots=True)
class BenchConfig:
    """One bench run; the options mirror iperf3's.

    Attributes:
        host, port, family: the server (iperf3 or socketkit; any echo server
            for latency).
        mode: ``tcp`` (throughput), ``udp`` (bitrate, loss, jitter), ``latency``.
        streams: parallel streams (-P), or connections in latency mode.
        duration: seconds (-t); 0 runs until ``stop`` is set (Ctrl-C), unless
            a byte or block count ends the test.
        num_bytes, blocks: end after this many bytes (-n) or blocks (-k).
        length: bytes per write, datagram or request (-l); None: the default.
        reverse: the server sends (-R). bidir: both directions at once.
        bitrate: bits per second per stream, as iperf3's -b (None: unlimited
            for TCP, 1 Mbit/s for UDP).
        window: socket buffer size in bytes (-w); 0: the system's.
        omit: seconds at the start left out of the figures (-O).
        depth: requests in flight per connection (latency pipelining).
        interval: seconds between interval reports (-i).
        get_server_output: ask for the server's report (--get-server-output).
        udp_counters_64bit: 64-bit UDP sequence numbers.
        simulate_loss: fraction of datagrams the sender skips on purpose (tests).
        seed: seed for ``simulate_loss``.
        wait_for_server: seconds during which a refused first connect is tried
            again (a server that is still starting).
    """

    host: str = "127.0.0.1"
    port: int = 5201
    family: int = socket.AF_UNSPEC
    mode: str = "tcp"
    streams: int = 1
    duration: float = 10.0
    num_bytes: int = 0
    blocks: int = 0
    length: int | None = None
    reverse: bool = False
    bidir: bool = False
    bitrate: float | None = None
    window: int = 0
    omit: int = 0
    depth: int = 1
    interval: float = 1.0
    wait_for_server: float = 0.0
    get_server_output: bool = False
    udp_counters_64bit: bool = False
    simulate_loss: float = 0.0
    seed: int = 0

    @property
    def write_size(self) -> int:
        if self.length:
            return self.length
        return {"tcp": DEFAULT_TCP_BLOCK, "udp": DEFAULT_UDP_BLOCK}.get(
            self.mode, DEFAULT_LATENCY_LENGTH
        )

    def check(self) -> None:
        """Refuse what iperf3 would refuse, before anything is sent.

        Raises:
            SettingError: a value the test cannot run with.
        """
        size = self.write_size
        if self.mode == "udp" and not MIN_UDP_BLOCK <= size <= MAX_UDP_BLOCK:
            raise SettingError(
                f"length {size}: a UDP datagram carries {MIN_UDP_BLOCK} to {MAX_UDP_BLOCK} bytes"
            )
        if self.mode == "tcp" and size > MAX_TCP_BLOCK:
            raise SettingError(
                f"length {size}: at most {MAX_TCP_BLOCK} bytes per write (as iperf3)"
            )
        if self.mode != "latency" and self.streams > 128:
            raise SettingError(f"{self.streams} streams: at most 128 streams (as iperf3)")
        if self.reverse and self.bidir:
            raise SettingError("reverse and bidir exclude each other")
        if self.num_bytes and self.blocks:
            raise SettingError("a byte count and a block count exclude each other (one end)")
        if self.interval <= 0:
            raise SettingError("the interval must be above 0 seconds")

    def params(self) -> TestParams:
        return TestParams(
            protocol="udp" if self.mode == "udp" else "tcp",
            time=0 if (self.num_bytes or self.blocks) else self.duration,
            num=self.num_bytes,
            blockcount=self.blocks,
            parallel=self.streams,
            reverse=self.reverse,
            bidirectional=self.bidir,
            length=self.write_size,
            bandwidth=int(self.bitrate or 0),
            omit=self.omit,
            window=self.window,
            get_server_output=self.get_server_output,
            udp_counters_64bit=self.udp_counters_64bit,
            client_version="socketkit",
        )


def run_bench(
    config: BenchConfig,
    on_interval: Callable[[IntervalSample], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run one test; return iperf3's JSON document (and socketkit's extras).

    Args:
        on_interval: called with each interval as it ends.
        stop: set it to end a test early (``-t 0`` runs until it is set).

    Raises:
        SocketkitError: the server cannot be reached, refused the test, is
            not an iperf3 or bench server, or vanished during the test.
    """
    config.check()
    if config.mode == "latency":
        return _run_latency(config, on_interval, stop)
    return _Test(config, stop or threading.Event()).run(on_interval)


def _endpoint(config: BenchConfig) -> InetEndpoint:
    return InetEndpoint(config.host, config.port)


def _describe(data: bytes) -> str:
    """A peer's first bytes, quoted for a one-line message."""
    shown = data[:40].decode("ascii", "replace").strip()
    return repr(shown) if shown else repr(data[:40])


class _Test:
    """One throughput test against an iperf3 (or socketkit) server."""

    def __init__(self, config: BenchConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.proto = ControlProtocol("client")
        self.cookie = make_cookie()
        self.params = config.params()

    def _event(self, conn: sync.Connection, timeout: float | None = CONTROL_TIMEOUT) -> Event:
        return control_event(conn, self.proto, timeout)

    def _expect(
        self, conn: sync.Connection, state: State, timeout: float | None = CONTROL_TIMEOUT
    ) -> None:
        event = self._event(conn, timeout)
        if not isinstance(event, StateEvent) or event.state != state:
            raise ProtocolError(f"the server sent {event} where iperf3 sends {state.name}")

    def _hello(self, conn: sync.Connection) -> None:
        """Send the cookie; make sure the answer is iperf3's, or say what it is."""
        conn.send_all(self.proto.send_cookie(self.cookie))
        where = f"{self.config.host}:{self.config.port}"
        try:
            first = conn.receive_some(1, timeout=FIRST_ANSWER_TIMEOUT)
        except SocketTimeoutError:
            raise RefusedError(
                f"{where} said nothing within {FIRST_ANSWER_TIMEOUT:g} s: not an iperf3 or "
                "socketkit bench server",
                hint="latency",
            ) from None
        if not first:
            raise RefusedError(f"{where} closed the connection: not an iperf3 server?")
        if first != b"\x09" and first[0] not in (0xFF, 0xFE):
            try:
                rest = conn.receive_some(64, timeout=0.2)
            except SocketTimeoutError:
                rest = b""
            answer = first + rest
            kind = (
                "an echo service"
                if self.cookie.startswith(answer[: len(self.cookie)].rstrip(b"\0"))
                else f"a service that answered {_describe(answer)}"
            )
            raise RefusedError(
                f"{where} is {kind}, not an iperf3 or socketkit bench server",
                hint="latency" if "echo" in kind else None,
            )
        self.proto.receive_data(first)

    def run(self, on_interval: Callable[[IntervalSample], None] | None) -> dict[str, Any]:
        config = self.config
        cpu0, wall0 = os.times(), time.monotonic()
        with ExitStack() as cleanup:
            control = sync.connect(
                _endpoint(config),
                family=config.family,
                connect_timeout=CONTROL_TIMEOUT,
                timeout=CONTROL_TIMEOUT,
                wait_for_server=config.wait_for_server,
            )
            cleanup.callback(control.close)
            self._hello(control)
            self._expect(control, State.PARAM_EXCHANGE)
            control.send_all(self.proto.send_params(self.params))
            self._expect(control, State.CREATE_STREAMS)
            streams = self._open_streams(control)
            for s in streams:
                cleanup.callback(s.close)
            self._expect(control, State.TEST_START)
            self._expect(control, State.TEST_RUNNING)
            run, threads, intervals, omitted = self._measure(streams, on_interval)
            retransmits = self._end_senders(run, streams, threads)
            control.send_all(self.proto.send_state(State.TEST_END))
            self._expect(control, State.EXCHANGE_RESULTS, END_TIMEOUT)
            for s in streams:
                s.stop = True
            join_all(threads, END_TIMEOUT)
            errors = [s.error for s in streams if s.error]
            if errors:
                raise BrokenError(f"a stream failed: {errors[0]}")
            cpu = cpu_percent(cpu0, wall0)
            ours = stream_results(streams, cpu, retransmits, omitted)
            control.send_all(self.proto.send_results(ours))
            event = self._event(control, END_TIMEOUT)
            if not isinstance(event, ResultsEvent):
                raise ProtocolError(f"the server sent {event} where iperf3 sends its results")
            peer = event.results
            self._expect(control, State.DISPLAY_RESULTS, END_TIMEOUT)
            control.send_all(self.proto.send_state(State.IPERF_DONE))
        start = start_section(
            self.params,
            self.cookie,
            streams,
            {"connecting_to": {"host": config.host, "port": config.port}},
        )
        doc = build_document(
            role="client",
            params=self.params,
            streams=streams,
            peer=peer,
            intervals=intervals,
            start=start,
            cpu=cpu,
            retransmits=retransmits,
            omitted_bytes=omitted,
        )
        if peer.server_output_json is not None:
            doc["server_output_json"] = peer.server_output_json
        if peer.server_output_text is not None:
            doc["server_output_text"] = peer.server_output_text
        return doc

    # -- streams ------------------------------------------------------------------
    def _open_streams(self, control: sync.Connection) -> list[Stream]:
        """Open the streams in iperf3's order: the client's sending ones first."""
        config = self.config
        n = config.streams
        sending = [True] * n if config.bidir else [not config.reverse] * n
        if config.bidir:
            sending += [False] * n
        streams: list[Stream] = []
        try:
            for sid, sends in zip(stream_ids(len(sending)), sending, strict=True):
                stream = Stream(sid, sends)
                streams.append(stream)
                if config.mode == "udp":
                    self._open_udp(stream, control)
                else:
                    stream.conn = sync.connect(
                        _endpoint(config),
                        family=control.socket.family,
                        connect_timeout=CONTROL_TIMEOUT,
                        timeout=CONTROL_TIMEOUT,
                    )
                    set_window(stream.conn.socket, config.window)
                    stream.conn.send_all(self.cookie)
                note_addresses(stream)
        except BaseException:
            for s in streams:
                s.close()
            raise
        return streams

    def _open_udp(self, stream: Stream, control: sync.Connection) -> None:
        config = self.config
        dgram = sync.open_datagram_client(
            _endpoint(config), family=control.socket.family, timeout=CONTROL_TIMEOUT
        )
        stream.dgram = dgram
        set_window(dgram.socket, config.window)
        dgram.send(UDP_CONNECT_MSG)
        # A reverse stream may see data before the reply (iperf3 allows a few).
        for _ in range(64):
            try:
                reply = dgram.receive(timeout=CONTROL_TIMEOUT)
            except SocketTimeoutError:
                raise BrokenError(
                    f"the server did not answer the UDP stream's hello within "
                    f"{CONTROL_TIMEOUT:g} s (UDP blocked on port {config.port}?)"
                ) from None
            if is_udp_connect_reply(reply):
                return
        raise ProtocolError("the server never answered the UDP stream's hello")

    def _measure(
        self, streams: list[Stream], on_interval: Callable[[IntervalSample], None] | None
    ) -> tuple[Run, list[Any], list[IntervalSample], dict[int, int]]:
        config = self.config
        budget_total = config.num_bytes or config.blocks * config.write_size
        sends = any(s.sending for s in streams)
        run = Run(
            length=config.write_size,
            udp=config.mode == "udp",
            rate=config.bitrate or 0.0,
            budget=Budget(budget_total) if budget_total and sends else None,
            receive_goal=budget_total if budget_total and not sends else 0,
            counters_64bit=config.udp_counters_64bit,
            simulate_loss=config.simulate_loss,
            seed=config.seed,
            flush_on_stop=True,
        )
        run.start = time.monotonic()
        timed = config.duration > 0 and not budget_total
        end_at = run.start + config.omit + config.duration if timed else float("inf")
        threads = start_workers(streams, run)
        omitted: dict[int, int] = {}

        def done(timeout: float) -> bool:
            left = end_at - time.monotonic()
            try:
                ended = run.end_now.wait(min(timeout, max(0.0, left)))
            except KeyboardInterrupt:
                self.stop.set()  # Ctrl-C ends the test; the results still count
                ended = True
            return ended or self.stop.is_set() or time.monotonic() >= end_at

        def read() -> tuple[list[int], list[int]]:
            return [s.bytes for s in streams], [s.packets for s in streams]

        if self.stop.is_set():
            run.end_now.set()
        stopper = threading.Thread(target=_relay_event, args=(self.stop, run.end_now), daemon=True)
        stopper.start()
        until: Callable[[float], bool] = done
        if config.omit:
            until = with_omit(done, streams, run.start + config.omit, omitted)
        intervals = sample_intervals(
            read, run.start, config.interval, until, on_interval, float(config.omit)
        )
        return run, threads, intervals, omitted

    def _end_senders(self, run: Run, streams: list[Stream], threads: list[Any]) -> dict[int, int]:
        """Stop the senders and wait until their data left; return TCP retransmits."""
        run.stop.set()
        senders = [(s, t) for s, t in zip(streams, threads, strict=True) if s.sending]
        join_all([t for _, t in senders], END_TIMEOUT)
        if any(s.conn is not None for s, _ in senders):
            # Acknowledged is not yet read: an iperf3 server closes its
            # streams on TEST_END and drops what its kernel still holds
            # (up to tcp_rmem's maximum per stream). The kernel tells no one
            # when the far application has read, so the server gets this
            # moment to catch up; its receiver seconds grow by as much.
            time.sleep(DRAIN_GRACE)
        retransmits: dict[int, int] = {}
        for s, _ in senders:
            if s.conn is not None:
                count = tcp_retransmits(s.sock)
                if count is not None:
                    retransmits[s.id] = count
        return retransmits


def _relay_event(source: threading.Event, target: threading.Event) -> None:
    """Set ``target`` once ``source`` is set (ends with the process: a daemon thread)."""
    source.wait()
    target.set()


# -- latency -------------------------------------------------------------------------
def _run_latency(
    config: BenchConfig,
    on_interval: Callable[[IntervalSample], None] | None,
    stop: threading.Event | None,
) -> dict[str, Any]:
    stop = stop or threading.Event()
    conns: list[sync.Connection] = []
    with ExitStack() as cleanup:
        for _ in range(config.streams):
            conn = sync.connect(
                _endpoint(config),
                family=config.family,
                connect_timeout=CONTROL_TIMEOUT,
                timeout=CONTROL_TIMEOUT,
                wait_for_server=config.wait_for_server,
            )
            cleanup.callback(conn.close)
            conns.append(conn)
            _echo_hello(conn, config)
        counts = [0] * len(conns)
        hists = [Histogram() for _ in conns]
        errors: list[str] = []
        start = time.monotonic()
        end = start + config.duration if config.duration > 0 else float("inf")

        def job(k: int) -> None:
            try:
                _ping_pong(config, conns[k], end, stop, hists[k], counts, k)
            except (SocketkitError, OSError) as exc:
                errors.append(str(exc))
                stop.set()

        threads = [threading.Thread(target=job, args=(k,), daemon=True) for k in range(len(conns))]
        for t in threads:
            t.start()

        def done(timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            try:
                for t in threads:
                    t.join(max(0.0, deadline - time.monotonic()))
            except KeyboardInterrupt:
                stop.set()
            return not any(t.is_alive() for t in threads)

        intervals = sample_intervals(
            lambda: ([0] * len(counts), list(counts)), start, config.interval, done, on_interval
        )
        elapsed = time.monotonic() - start
        if errors:
            raise BrokenError(f"latency test failed: {errors[0]}")
    hist = Histogram()
    for h in hists:
        hist.merge(h)
    return _latency_document(config, hist, intervals, elapsed)


def _echo_hello(conn: sync.Connection, config: BenchConfig) -> None:
    """Make sure the far end echoes: it must return ``ECHO_HELLO`` unchanged."""
    where = f"{config.host}:{config.port}"
    conn.send_all(ECHO_HELLO)
    got = b""
    try:
        while len(got) < len(ECHO_HELLO):
            data = conn.receive_some(len(ECHO_HELLO) - len(got), timeout=FIRST_ANSWER_TIMEOUT)
            if not data:
                break
            got += data
            if not ECHO_HELLO.startswith(got):
                break
    except SocketTimeoutError:
        raise RefusedError(
            f"{where} did not echo within {FIRST_ANSWER_TIMEOUT:g} s", hint="latency-peer"
        ) from None
    if got == ECHO_HELLO:
        return
    if got[:1] == b"\x09":
        raise RefusedError(
            f"{where} is an iperf3 server: iperf3's protocol has no echo", hint="latency-peer"
        )
    if not got:
        raise RefusedError(f"{where} closed the connection instead of echoing")
    raise RefusedError(f"{where} answered {_describe(got)} instead of echoing: not an echo service")


def _ping_pong(
    config: BenchConfig,
    conn: sync.Connection,
    end: float,
    stop: threading.Event,
    hist: Histogram,
    counts: list[int],
    slot: int,
) -> None:
    size = config.write_size
    depth = config.depth
    # At most ``depth`` requests are in flight, so each batch of new requests
    # is a slice of this.
    requests = memoryview(b"x" * (size * depth))
    sent_at: list[int] = []
    pending = 0  # bytes of a response received so far
    head = 0
    for _ in range(depth):
        sent_at.append(time.perf_counter_ns())
        conn.send_all(requests[:size])
    while True:
        data = conn.receive_some(max(65536, size * depth))
        if not data:
            raise BrokenError("the echo server closed the connection during the test")
        now = time.perf_counter_ns()
        pending += len(data)
        finished = pending // size
        pending -= finished * size
        if not finished:
            continue
        for _ in range(finished):
            hist.record(now - sent_at[head])
            head += 1
        counts[slot] += finished
        if time.monotonic() >= end or stop.is_set():
            if head == len(sent_at):
                return
            continue  # collect the answers still in flight
        for _ in range(finished):
            sent_at.append(time.perf_counter_ns())
        conn.send_all(requests[: size * finished])
        if head > 4096:
            del sent_at[:head]
            head = 0


def _latency_document(
    config: BenchConfig, hist: Histogram, intervals: list[IntervalSample], elapsed: float
) -> dict[str, Any]:
    return {
        "start": {
            "version": "socketkit bench",
            "connecting_to": {"host": config.host, "port": config.port},
            "test_start": {
                "protocol": "TCP",
                "mode": "latency",
                "num_streams": config.streams,
                "blksize": config.write_size,
                "duration": config.duration,
                "depth": config.depth,
            },
        },
        "intervals": [
            {
                "sum": {
                    "start": s.start,
                    "end": s.end,
                    "seconds": s.end - s.start,
                    "requests": sum(s.requests),
                    "requests_per_second": sum(s.requests) / max(s.end - s.start, 1e-9),
                }
            }
            for s in intervals
        ],
        "end": {
            "latency": {
                "requests": hist.count,
                "requests_per_second": hist.count / elapsed if elapsed else 0.0,
                "connections": config.streams,
                "depth": config.depth,
                "percentiles_us": {
                    name: hist.percentile(p) / 1000
                    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))
                }
                | {"min": hist.min / 1000, "max": hist.max / 1000, "mean": hist.mean / 1000},
                "histogram_us": [[v / 1000, n] for v, n in hist.buckets()],
            }
        },
    }
