"""``socketkit bench server``: the far end of every bench test.

Strategy: blocking sockets and one thread per connection. A data stream
spends its time inside ``recv_into``/``send``, which release the GIL, so
several streams proceed in parallel; the bench client can spread its own
side over processes (``--procs``) when one is not enough. The server keeps
each test's state under its cookie until the control connection ends.

Measurements the server makes (and returns over the control connection):
- a stream the client sends: bytes received and seconds from the first byte
  to the end of stream (the receiver's figure, as iperf3 reports it);
- a stream the server sends (``-R``/``--bidir``): bytes sent in ``duration``;
- UDP: per stream, datagrams received, the highest sequence number,
  out-of-order arrivals and RFC 3550 jitter (see ``_UdpStats``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from .._sockets import bind_socket, bound_port
from ..address import InetEndpoint
from ..errors import SocketkitError
from ._wire import (
    CONTROL,
    DATA,
    DATA_HEADER,
    UDP_HEADER,
    UDP_MAGIC,
    read_json_line,
    receive_exactly,
    write_json_line,
)

__all__ = ["BenchServer"]

#: Receive buffer per stream (iperf3 uses 128 KiB writes by default).
RECV_BUFFER = 256 * 1024
#: Seconds a control connection waits for its streams after "done", beyond the test.
STREAM_GRACE = 10.0


class _UdpStats:
    """One UDP stream's receiver statistics, computed as iperf3 does.

    Loss: a sequence number above the next expected counts the gap as lost;
    one below it is out of order and takes one back from the lost count
    (iperf3 ``iperf_udp_recv``). The sender's final count is used at the end
    to include datagrams lost after the last one received.
    Jitter (RFC 3550 section 6.4.1): with transit = arrival - send time,
    J += (|D| - J) / 16 for the difference D of consecutive transits.
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

    def to_json(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "highest_sequence": self.highest,
            "out_of_order": self.out_of_order,
            "jitter_ms": self.jitter_ns / 1e6,
        }


@dataclass
class _Test:
    params: dict[str, Any]
    expected: int
    results: list[dict[str, Any]] = field(default_factory=list)
    done: threading.Condition = field(default_factory=threading.Condition)
    udp_sock: socket.socket | None = None
    udp_stats: dict[int, _UdpStats] = field(default_factory=dict)
    udp_stop: threading.Event = field(default_factory=threading.Event)
    udp_thread: threading.Thread | None = None


class BenchServer:
    """Serves bench tests on ``listener`` until ``stop`` (or one test with ``once``)."""

    def __init__(self, listener: socket.socket, log: TextIO | None = None, *, once: bool = False):
        self.listener = listener
        self.log = log
        self.once = once
        self._tests: dict[bytes, _Test] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    @classmethod
    def bind(
        cls, host: str | None, port: int, family: int = socket.AF_UNSPEC, **kwargs: Any
    ) -> BenchServer:
        return cls(bind_socket(InetEndpoint(host, port), family=family), **kwargs)

    @property
    def port(self) -> int:
        port = bound_port(self.listener)
        assert port is not None  # an IP listener (see ``bind``)
        return port

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()

    def serve_forever(self) -> None:
        """Accept and serve connections until ``stop`` is called."""
        self.listener.settimeout(0.25)  # to notice stop(); accept is the only wait here
        try:
            while not self._stopping.is_set():
                try:
                    sock, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        break
                    raise
                sock.settimeout(None)
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        finally:
            self.listener.close()

    def stop(self) -> None:
        self._stopping.set()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                head = receive_exactly(sock, 4)
                if head == CONTROL:
                    self._control(sock)
                elif head == DATA:
                    self._data(sock)
                else:
                    self._echo(sock, head)
            except (OSError, ValueError, SocketkitError) as exc:
                self._say(f"bench server: connection ended: {exc}")

    # -- echo (latency) -----------------------------------------------------
    def _echo(self, sock: socket.socket, head: bytes) -> None:
        with contextlib.suppress(ConnectionError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        buf = bytearray(65536)
        view = memoryview(buf)
        while True:
            n = sock.recv_into(buf)
            if n == 0:
                return
            sock.sendall(view[:n])

    # -- control ----------------------------------------------------------
    def _control(self, sock: socket.socket) -> None:
        buffer = bytearray()
        params = read_json_line(sock, buffer)
        if params is None:
            return
        cookie = bytes.fromhex(str(params["cookie"]))
        streams = int(params.get("streams", 1))
        mode = str(params.get("mode", "tcp"))
        expected = 0 if mode == "udp" else streams * (2 if params.get("bidir") else 1)
        test = _Test(params, expected)
        reply: dict[str, Any] = {"ok": True}
        if mode == "udp":
            # UDP on the address the client reached; an IPv4 client of a
            # dual-stack listener shows up as ::ffff:a.b.c.d.
            host = sock.getsockname()[0]
            family = sock.family
            if host.startswith("::ffff:") and "." in host:
                host, family = host[7:], socket.AF_INET
            try:
                test.udp_sock = bind_socket(
                    InetEndpoint(host, 0), type=socket.SOCK_DGRAM, family=family
                )
            except SocketkitError as exc:
                write_json_line(sock, {"error": str(exc)})
                return
            with contextlib.suppress(OSError):
                test.udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            reply["udp_port"] = bound_port(test.udp_sock)
            test.udp_thread = threading.Thread(target=self._udp_receive, args=(test,), daemon=True)
            test.udp_thread.start()
        with self._lock:
            self._tests[cookie] = test
        self._say(f"bench server: {mode} test from {sock.getpeername()[0]}, {streams} stream(s)")
        try:
            write_json_line(sock, reply)
            done = read_json_line(sock, buffer)
            if done is None:
                return
            deadline = time.monotonic() + float(params.get("duration", 10)) + STREAM_GRACE
            with test.done:
                test.done.wait_for(
                    lambda: len(test.results) >= test.expected,
                    timeout=max(0.0, deadline - time.monotonic()),
                )
            answer: dict[str, Any] = {"streams": list(test.results)}
            if test.udp_sock is not None:
                self._end_udp(test)
                answer["udp"] = {str(k): v.to_json() for k, v in test.udp_stats.items()}
            write_json_line(sock, answer)
        finally:
            with self._lock:
                self._tests.pop(cookie, None)
            if test.udp_sock is not None:
                self._end_udp(test)
                test.udp_sock.close()
            if self.once:
                self.stop()

    # -- data streams -------------------------------------------------------
    def _data(self, sock: socket.socket) -> None:
        cookie, stream, direction = DATA_HEADER.unpack(receive_exactly(sock, DATA_HEADER.size))
        with self._lock:
            test = self._tests.get(cookie)
        if test is None:
            raise ValueError("data stream for an unknown test")
        if direction == b"r":
            result = self._send_stream(sock, test, stream)
        else:
            result = self._receive_stream(sock, stream)
        with test.done:
            test.results.append(result)
            test.done.notify_all()

    def _receive_stream(self, sock: socket.socket, stream: int) -> dict[str, Any]:
        buf = bytearray(RECV_BUFFER)
        total = 0
        first = 0.0
        n = sock.recv_into(buf)
        if n:
            first = time.monotonic()
        while n:
            total += n
            n = sock.recv_into(buf)
        seconds = time.monotonic() - first if total else 0.0
        return {"stream": stream, "direction": "forward", "bytes": total, "seconds": seconds}

    def _send_stream(self, sock: socket.socket, test: _Test, stream: int) -> dict[str, Any]:
        length = int(test.params.get("length") or 128 * 1024)
        duration = float(test.params.get("duration", 10))
        if receive_exactly(sock, 1) != b"g":  # the client's clock starts here
            raise ValueError("expected the go byte")
        data = memoryview(bytes(length))
        total = 0
        start = time.monotonic()
        end = start + duration
        while time.monotonic() < end:
            total += sock.send(data)
        seconds = time.monotonic() - start
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # the client closes once it has read everything
            pass
        return {"stream": stream, "direction": "reverse", "bytes": total, "seconds": seconds}

    # -- UDP ------------------------------------------------------------------
    @staticmethod
    def _end_udp(test: _Test) -> None:
        """Stop the test's UDP receiver and wait for it (its figures are then final)."""
        test.udp_stop.set()
        if test.udp_thread is not None:
            test.udp_thread.join(STREAM_GRACE)

    def _udp_receive(self, test: _Test) -> None:
        sock = test.udp_sock
        assert sock is not None
        sock.settimeout(0.05)  # to notice the end of the test
        buf = bytearray(65536)
        header = UDP_HEADER
        stats = test.udp_stats
        while True:
            try:
                n = sock.recv_into(buf)
            except TimeoutError:
                if test.udp_stop.is_set():
                    return
                continue
            except OSError:
                return
            now = time.monotonic_ns()
            if n < header.size:
                continue
            magic, stream, seq, sent_ns = header.unpack_from(buf)
            if magic != UDP_MAGIC:
                continue
            s = stats.get(stream)
            if s is None:
                s = stats[stream] = _UdpStats()
            s.add(seq, sent_ns, now, n)
