"""``socketkit bench client``: run the streams, sample them, gather the figures.

Strategy:
- Each stream (a TCP connection, a UDP socket, or a latency connection) is a
  job run by a thread; with ``procs`` > 1 the jobs are dealt out to worker
  processes, each running its share in threads, because one Python process
  tops out near one core. Every job publishes its running byte and request
  counts in a shared array; the parent samples it every ``interval`` seconds
  for the interval reports, so reporting costs the jobs nothing.
- All jobs connect first, then meet at a barrier; the clock starts when it
  opens (reverse streams tell the server "go" then).
- At the end the client sends its own counts on the control connection and
  the server answers with its side (what it received, UDP loss and jitter).
  Sender and receiver figures are both reported, as iperf3 does.
- Each process reports its CPU time: near 100 % of a core means the client,
  not the server, may be the limit (add ``--procs``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .._sockets import connect_socket
from ..address import InetEndpoint
from ..errors import SocketkitError
from ._histogram import Histogram
from ._wire import (
    CONTROL,
    DATA,
    DATA_HEADER,
    UDP_HEADER,
    UDP_MAGIC,
    read_json_line,
    write_json_line,
)

__all__ = ["BenchConfig", "IntervalSample", "run_bench"]

#: Default write sizes: TCP as iperf3 (128 KiB), UDP one Ethernet payload, latency 64 B.
DEFAULT_LENGTH = {"tcp": 128 * 1024, "udp": 1460, "latency": 64}
#: Seconds to wait for the server at the start and for its answer at the end.
CONTROL_TIMEOUT = 10.0


@dataclass(slots=True)
class BenchConfig:
    """One bench run.

    Attributes:
        host, port, family: the bench server (or, for latency, any echo server).
        mode: ``tcp`` (throughput), ``udp`` (bitrate, loss, jitter), ``latency``.
        streams: parallel streams (-P), or connections in latency mode.
        duration: seconds each stream runs (-t).
        length: bytes per write, datagram or request (-l); None: the mode's default.
        reverse: the server sends (-R). bidir: both directions at once.
        bitrate: bits per second over all streams (-b); None: as fast as possible
            (UDP defaults to 1 Mbit/s as iperf3 does).
        depth: requests in flight per connection (latency pipelining).
        interval: seconds between interval reports.
        procs: client processes sharing the streams.
        simulate_loss: fraction of datagrams the sender skips on purpose (tests).
        seed: seed for ``simulate_loss``.
    """

    host: str = "127.0.0.1"
    port: int = 5201
    family: int = socket.AF_UNSPEC
    mode: str = "tcp"
    streams: int = 1
    duration: float = 10.0
    length: int | None = None
    reverse: bool = False
    bidir: bool = False
    bitrate: float | None = None
    depth: int = 1
    interval: float = 1.0
    procs: int = 1
    simulate_loss: float = 0.0
    seed: int = 0

    @property
    def write_size(self) -> int:
        return self.length or DEFAULT_LENGTH[self.mode]


@dataclass(slots=True)
class _Job:
    index: int
    kind: str  # send, recv, udp, latency
    stream: int
    direction: str


@dataclass(slots=True)
class IntervalSample:
    """What the jobs did between ``start`` and ``end`` seconds into the test."""

    start: float
    end: float
    bytes: list[int]
    requests: list[int]


@dataclass(slots=True)
class _JobResult:
    index: int
    bytes: int = 0
    seconds: float = 0.0
    packets: int = 0
    skipped: int = 0
    histogram: dict[str, object] | None = None
    error: str | None = None


@dataclass(slots=True)
class _Shared:
    counters: Any  # a multiprocessing Array of u64: bytes and requests per job
    barrier: Any
    results: list[dict[str, Any]] = field(default_factory=list)


def _jobs(config: BenchConfig) -> list[_Job]:
    jobs: list[_Job] = []
    for s in range(config.streams):
        if config.mode == "latency":
            jobs.append(_Job(len(jobs), "latency", s, "forward"))
        elif config.mode == "udp":
            jobs.append(_Job(len(jobs), "udp", s, "forward"))
        else:
            if not config.reverse or config.bidir:
                jobs.append(_Job(len(jobs), "send", s, "forward"))
            if config.reverse or config.bidir:
                jobs.append(_Job(len(jobs), "recv", s, "reverse"))
    return jobs


# -- the jobs -------------------------------------------------------------------
def _connect(config: BenchConfig, port: int, kind: int = socket.SOCK_STREAM) -> socket.socket:
    return connect_socket(
        InetEndpoint(config.host, port), type=kind, family=config.family, timeout=CONTROL_TIMEOUT
    )


def _pace(start: float, sent_bytes: int, rate_bytes: float) -> None:
    """Sleep until ``sent_bytes`` is due at ``rate_bytes`` per second."""
    due = start + sent_bytes / rate_bytes
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _run_job(
    config: BenchConfig,
    job: _Job,
    cookie: bytes,
    udp_port: int,
    counters: Any,
    barrier: Any,
) -> _JobResult:
    result = _JobResult(job.index)
    slot = job.index * 2
    if job.kind == "udp":
        sock = _connect(config, udp_port, socket.SOCK_DGRAM)
    else:
        sock = _connect(config, config.port)
    with sock:
        if job.kind in ("send", "recv"):
            direction = b"f" if job.kind == "send" else b"r"
            sock.sendall(DATA + DATA_HEADER.pack(cookie, job.stream, direction))
        barrier.wait(CONTROL_TIMEOUT)
        start = time.monotonic()
        end = start + config.duration
        if job.kind == "send":
            result.bytes = _tcp_send(config, sock, start, end, counters, slot)
            result.seconds = time.monotonic() - start
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the server closes once it has read everything
                pass
        elif job.kind == "recv":
            sock.sendall(b"g")
            result.bytes = _tcp_receive(sock, counters, slot)
            result.seconds = time.monotonic() - start
        elif job.kind == "udp":
            result.bytes, result.packets, result.skipped = _udp_send(
                config, job, sock, start, end, counters, slot
            )
            result.seconds = time.monotonic() - start
        else:
            hist = _latency(config, sock, end, counters, slot)
            result.histogram = hist.to_counts()
            result.bytes = hist.count * config.write_size
            result.packets = hist.count
            result.seconds = time.monotonic() - start
    return result


def _tcp_send(
    config: BenchConfig, sock: socket.socket, start: float, end: float, counters: Any, slot: int
) -> int:
    """Write until ``end`` (paced when a bitrate is set); return the bytes sent."""
    rate = config.bitrate / 8 / config.streams if config.bitrate else None
    data = memoryview(bytes(config.write_size))
    total = 0
    while time.monotonic() < end:
        if rate is not None:
            _pace(start, total, rate)
        total += sock.send(data)
        counters[slot] = total
    return total


def _tcp_receive(sock: socket.socket, counters: Any, slot: int) -> int:
    """Read until the server ends the stream; return the bytes received."""
    buf = bytearray(256 * 1024)
    total = 0
    n = sock.recv_into(buf)
    while n:
        total += n
        counters[slot] = total
        n = sock.recv_into(buf)
    return total


def _udp_send(
    config: BenchConfig,
    job: _Job,
    sock: socket.socket,
    start: float,
    end: float,
    counters: Any,
    slot: int,
) -> tuple[int, int, int]:
    size = max(config.write_size, UDP_HEADER.size)
    rate = (config.bitrate or 1_000_000) / 8 / config.streams
    packet = bytearray(size)
    rng = random.Random(config.seed * 1000 + job.stream)
    seq = 0
    sent = 0
    skipped = 0
    while time.monotonic() < end:
        _pace(start, seq * size, rate)
        seq += 1
        if config.simulate_loss and rng.random() < config.simulate_loss:
            skipped += 1
            continue
        UDP_HEADER.pack_into(packet, 0, UDP_MAGIC, job.stream, seq, time.monotonic_ns())
        try:
            sock.send(packet)
        except (BlockingIOError, ConnectionRefusedError):
            continue  # a full buffer or an ICMP error: the datagram is lost, as UDP may
        sent += size
        counters[slot] = sent
        counters[slot + 1] = seq
    return sent, seq, skipped


def _latency(
    config: BenchConfig, sock: socket.socket, end: float, counters: Any, slot: int
) -> Histogram:
    hist = Histogram()
    size = config.write_size
    # At most ``depth`` requests are in flight, so a batch of answers is at
    # most ``depth`` long: each batch of new requests is a slice of this.
    requests = memoryview(b"x" * (size * config.depth))
    sent_at: list[int] = []
    buf = bytearray(max(65536, size * config.depth))
    pending = 0  # bytes of a response received so far
    head = 0
    for _ in range(config.depth):
        sent_at.append(time.perf_counter_ns())
        sock.sendall(requests[:size])
    done = 0
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            raise SocketkitError("the echo server closed the connection during the test")
        now = time.perf_counter_ns()
        pending += n
        finished = pending // size
        pending -= finished * size
        if not finished:
            continue
        for _ in range(finished):
            hist.record(now - sent_at[head])
            head += 1
        done += finished
        counters[slot + 1] = done
        if time.monotonic() >= end:
            if head == len(sent_at):
                break
            continue  # collect the answers still in flight
        for _ in range(finished):
            sent_at.append(time.perf_counter_ns())
        sock.sendall(requests[: size * finished])
        if head > 4096:
            del sent_at[:head]
            head = 0
    return hist


def _worker(
    config: BenchConfig,
    jobs: list[_Job],
    cookie: bytes,
    udp_port: int,
    counters: Any,
    barrier: Any,
    out: Any,
) -> None:
    """Run ``jobs`` in threads; put (results, cpu seconds, wall seconds) on ``out``."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run(job: _Job) -> None:
        try:
            res = _run_job(config, job, cookie, udp_port, counters, barrier)
        except (OSError, SocketkitError, threading.BrokenBarrierError) as exc:
            barrier.abort()  # the other jobs stop waiting for this one
            res = _JobResult(job.index, error=str(exc) or type(exc).__name__)
        with lock:
            results.append(asdict(res))

    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(
        {
            "pid": os.getpid(),
            "results": results,
            "cpu_seconds": time.process_time() - cpu0,
            "wall_seconds": time.monotonic() - wall0,
        }
    )


class _ListQueue:
    """The one-process stand-in for a multiprocessing queue."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def put(self, item: dict[str, Any]) -> None:
        self.items.append(item)


def run_bench(
    config: BenchConfig, on_interval: Callable[[IntervalSample], None] | None = None
) -> dict[str, Any]:
    """Run one test against the server; return the result (the JSON document).

    Raises:
        SocketkitError: the server cannot be reached or refused the test.
    """
    jobs = _jobs(config)
    cookie = os.urandom(16)
    control: socket.socket | None = None
    udp_port = 0
    buffer = bytearray()
    if config.mode != "latency":
        control = _connect(config, config.port)
        control.settimeout(config.duration + CONTROL_TIMEOUT * 2)
        params = {
            "cookie": cookie.hex(),
            "mode": config.mode,
            "streams": config.streams,
            "duration": config.duration,
            "length": config.write_size,
            "reverse": config.reverse,
            "bidir": config.bidir,
        }
        control.sendall(CONTROL)
        write_json_line(control, params)
        reply = read_json_line(control, buffer)
        if reply is None or not reply.get("ok"):
            control.close()
            raise SocketkitError(
                f"the bench server refused the test: {reply.get('error') if reply else 'closed'}"
                " (is it a socketkit bench server?)"
            )
        udp_port = int(reply.get("udp_port", 0))
    try:
        procs = max(1, min(config.procs, len(jobs)))
        ctx: Any = multiprocessing.get_context(
            "fork" if sys.platform.startswith("linux") else "spawn"
        )
        counters: Any = ctx.Array("Q", len(jobs) * 2, lock=False)
        barrier: Any = (ctx.Barrier if procs > 1 else threading.Barrier)(len(jobs) + 1)
        if procs == 1:
            queue: Any = _ListQueue()
            runner = threading.Thread(
                target=_worker,
                args=(config, jobs, cookie, udp_port, counters, barrier, queue),
                daemon=True,
            )
            runner.start()

            def runner_done(timeout: float) -> bool:
                runner.join(timeout)
                return not runner.is_alive()

            jobs_done: Callable[[float], bool] = runner_done
        else:
            queue = ctx.Queue()
            processes = []
            for p in range(procs):
                share = jobs[p::procs]
                proc = ctx.Process(
                    target=_worker,
                    args=(config, share, cookie, udp_port, counters, barrier, queue),
                    daemon=True,
                )
                proc.start()
                processes.append(proc)
            jobs_done = _processes_done([proc.sentinel for proc in processes])
        barrier.wait(CONTROL_TIMEOUT + config.duration)
        start = time.monotonic()
        intervals = _sample(
            config,
            len(jobs),
            counters,
            start,
            on_interval,
            jobs_done,
        )
        reports: list[dict[str, Any]]
        if procs == 1:
            runner.join()
            reports = queue.items
        else:
            reports = [queue.get(timeout=CONTROL_TIMEOUT) for _ in range(procs)]
            for proc in processes:
                proc.join(CONTROL_TIMEOUT)
        elapsed = time.monotonic() - start
        results = sorted((r for rep in reports for r in rep["results"]), key=lambda r: r["index"])
        errors = [r["error"] for r in results if r["error"]]
        if errors:
            raise SocketkitError(f"bench stream failed: {errors[0]}")
        server_side: dict[str, Any] = {}
        if control is not None:
            write_json_line(control, {"done": True})
            answer = read_json_line(control, buffer)
            if answer is None:
                raise SocketkitError("the bench server closed the control connection early")
            server_side = answer
        return _document(config, jobs, results, server_side, intervals, reports, elapsed)
    finally:
        if control is not None:
            control.close()


def _processes_done(sentinels: list[Any]) -> Callable[[float], bool]:
    """``jobs_done`` for worker processes: waits on their sentinels."""
    pending = list(sentinels)

    def wait(timeout: float) -> bool:
        nonlocal pending
        ready = multiprocessing.connection.wait(pending, timeout)
        pending = [w for w in pending if w not in ready]
        return not pending

    return wait


def _sample(
    config: BenchConfig,
    n_jobs: int,
    counters: Any,
    start: float,
    on_interval: Callable[[IntervalSample], None] | None,
    jobs_done: Callable[[float], bool],
) -> list[IntervalSample]:
    """Read the counters every interval until the jobs end; return the intervals.

    ``jobs_done(timeout)`` waits up to ``timeout`` seconds for the jobs to end
    and says whether they have.
    """
    samples: list[IntervalSample] = []
    last_b = [0] * n_jobs
    last_r = [0] * n_jobs
    last_t = 0.0
    tick = 1
    while True:
        due = start + tick * config.interval
        timeout = max(0.0, due - time.monotonic())
        finished = jobs_done(timeout)
        now = time.monotonic()
        if now >= due or finished:
            b = [counters[i * 2] for i in range(n_jobs)]
            r = [counters[i * 2 + 1] for i in range(n_jobs)]
            t = now - start
            # A sliver after the last full interval (the streams' own ending)
            # is folded into the previous one rather than shown on its own.
            if finished and samples and t - last_t < config.interval / 4:
                prev = samples[-1]
                prev.end = t
                prev.bytes = [x + y - z for x, y, z in zip(prev.bytes, b, last_b, strict=True)]
                prev.requests = [
                    x + y - z for x, y, z in zip(prev.requests, r, last_r, strict=True)
                ]
            elif t - last_t > 0.001 or not samples:
                sample = IntervalSample(
                    last_t,
                    t,
                    [x - y for x, y in zip(b, last_b, strict=True)],
                    [x - y for x, y in zip(r, last_r, strict=True)],
                )
                samples.append(sample)
                if on_interval is not None:
                    on_interval(sample)
            last_b, last_r, last_t = b, r, t
            tick = int(t / config.interval) + 1
        if finished:
            return samples


def _rate(nbytes: int, seconds: float) -> float:
    return nbytes * 8 / seconds if seconds > 0 else 0.0


def _document(
    config: BenchConfig,
    jobs: list[_Job],
    results: list[dict[str, Any]],
    server: dict[str, Any],
    intervals: list[IntervalSample],
    reports: list[dict[str, Any]],
    elapsed: float,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "tool": "socketkit bench",
        "params": {
            k: v for k, v in asdict(config).items() if k not in ("simulate_loss", "seed", "family")
        }
        | {"length": config.write_size},
        "intervals": [
            {
                "start": s.start,
                "end": s.end,
                "bytes": sum(s.bytes),
                "bits_per_second": _rate(sum(s.bytes), s.end - s.start),
                "requests": sum(s.requests) if config.mode == "latency" else None,
                "streams": s.bytes,
            }
            for s in intervals
        ],
        "client": {
            "processes": len(reports),
            "cpu_percent": [
                round(100 * r["cpu_seconds"] / max(r["wall_seconds"], 1e-9), 1) for r in reports
            ],
            "seconds": elapsed,
        },
    }
    if config.mode == "latency":
        hist = Histogram()
        for r in results:
            if r["histogram"]:
                hist.merge(Histogram.from_counts(r["histogram"]))
        seconds = max((r["seconds"] for r in results), default=0.0)
        doc["latency"] = {
            "requests": hist.count,
            "requests_per_second": hist.count / seconds if seconds else 0.0,
            "connections": config.streams,
            "depth": config.depth,
            "percentiles_us": {
                name: hist.percentile(p) / 1000
                for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))
            }
            | {"min": hist.min / 1000, "max": hist.max / 1000, "mean": hist.mean / 1000},
            "histogram_us": [[v / 1000, n] for v, n in hist.buckets()],
        }
        for i in doc["intervals"]:
            i["requests_per_second"] = (i["requests"] or 0) / max(i["end"] - i["start"], 1e-9)
        return doc
    server_streams = {(s["stream"], s["direction"]): s for s in server.get("streams", [])}
    directions: dict[str, dict[str, Any]] = {}
    for job, r in zip(jobs, results, strict=True):
        far = server_streams.get((job.stream, job.direction), {"bytes": 0, "seconds": 0.0})
        ours = {"bytes": r["bytes"], "seconds": r["seconds"]}
        sender, receiver = (ours, far) if job.kind in ("send", "udp") else (far, ours)
        d = directions.setdefault(
            job.direction,
            {"sender": {"bytes": 0, "seconds": 0.0}, "receiver": {"bytes": 0, "seconds": 0.0}},
        )
        for side, fig in (("sender", sender), ("receiver", receiver)):
            d[side]["bytes"] += int(fig["bytes"])
            d[side]["seconds"] = max(d[side]["seconds"], float(fig["seconds"]))
    if config.mode == "udp":
        udp = server.get("udp", {})
        sent_packets = sum(r["packets"] for r in results)
        received = sum(int(s["packets"]) for s in udp.values())
        out_of_order = sum(int(s["out_of_order"]) for s in udp.values())
        jitters = [float(s["jitter_ms"]) for s in udp.values()]
        lost = max(0, sent_packets - received)
        doc["udp"] = {
            "packets": sent_packets,
            "received": received,
            "lost": lost,
            "lost_percent": 100.0 * lost / sent_packets if sent_packets else 0.0,
            "out_of_order": out_of_order,
            "jitter_ms": sum(jitters) / len(jitters) if jitters else 0.0,
            "skipped_on_purpose": sum(r["skipped"] for r in results),
        }
        directions["forward"]["receiver"]["bytes"] = sum(int(s["bytes"]) for s in udp.values())
        directions["forward"]["receiver"]["seconds"] = directions["forward"]["sender"]["seconds"]
    for d in directions.values():
        for side in ("sender", "receiver"):
            d[side]["bits_per_second"] = _rate(d[side]["bytes"], d[side]["seconds"])
    doc["summary"] = directions
    return doc
