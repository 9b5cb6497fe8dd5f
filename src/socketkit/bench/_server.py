"""``socketkit bench server``: an iperf3 server that runs many tests at once.

Strategy: one listener, one thread per connection. A connection's first 37
bytes decide what it is:
- a cookie we know, of a test waiting for its streams: a TCP data stream of
  that test (its thread then runs the stream);
- ``ECHO_HELLO``: a latency client; the connection echoes;
- any other well-formed cookie: a new test's control connection, served by
  ``_Control`` with ``ControlProtocol("server")``;
- anything else: ACCESS_DENIED, as iperf3 answers a wrong cookie.
UDP streams arrive on the same port number over UDP with a 4-byte hello
that carries no cookie; one test at a time may wait for UDP streams from a
given client address (``_udp_lock``), so each hello belongs to exactly one
test. The hello's sender gets a socket of its own bound to the same port
and connected to it (SO_REUSEADDR; the kernel prefers the connected socket
for that peer's datagrams), as iperf3 does.

iperf3 serves one test at a time and answers others "busy"; this server
serves every test at once. ``once`` stops after the first test.

Exact counts: a receiving stream reads on after TEST_END until it holds the
bytes (TCP) or datagrams (UDP) the client's results say were sent, so both
ends report the same figure. An iperf3 client stops counting what it
receives when its own clock ends, so with one (``client_version`` is not
socketkit's) the sending streams stop ``REVERSE_MARGIN`` seconds early and
wait for their data to be acknowledged.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from .. import sync
from .._sockets import bind_socket
from ..address import InetEndpoint
from ..errors import FramingError, SocketkitError, SocketTimeoutError
from ._protocol import (
    ECHO_HELLO,
    IERECVPARAMS,
    UDP_CONNECT_REPLY,
    ControlProtocol,
    CookieEvent,
    Event,
    ParamsEvent,
    ProtocolError,
    Results,
    ResultsEvent,
    State,
    StateEvent,
    TestParams,
    UnsupportedOption,
    is_cookie,
)
from ._report import build_document, start_section, text_report
from ._streams import (
    Budget,
    IntervalSample,
    Run,
    Stream,
    control_event,
    cpu_percent,
    join_all,
    note_addresses,
    plain_host,
    sample_intervals,
    set_window,
    start_workers,
    stream_ids,
    stream_results,
    tcp_retransmits,
    with_omit,
)

__all__ = ["BenchServer"]

#: Seconds a new connection has to send its first 37 bytes.
HELLO_TIMEOUT = 10.0
#: Seconds a test waits for its streams after CREATE_STREAMS.
STREAMS_TIMEOUT = 10.0
#: Seconds of silence on the control connection, beyond the test's length,
#: after which the client counts as gone.
CONTROL_GRACE = 30.0
#: Seconds the end of the test may take (streams draining, results).
END_TIMEOUT = 10.0
#: Seconds before an iperf3 client's clock ends that the server stops sending.
REVERSE_MARGIN = 0.1


class _TestState:
    """One test: its cookie, parameters and streams; shared by its threads."""

    def __init__(self, cookie: bytes, params: TestParams, peer_host: str) -> None:
        self.cookie = cookie
        self.params = params
        self.peer_host = peer_host
        p = params.parallel
        self.n_receive = p if (not params.reverse or params.bidirectional) else 0
        self.n_send = p if (params.reverse or params.bidirectional) else 0
        self.streams: list[Stream] = []
        self._arrived: list[tuple[int, Stream]] = []
        self.ready = threading.Condition()

    @property
    def expected(self) -> int:
        return self.n_receive + self.n_send

    def add(
        self,
        order: int,
        *,
        conn: sync.Connection | None = None,
        dgram: sync.DatagramSocket | None = None,
    ) -> bool:
        """Take a stream that arrived ``order``-th on the server; False if the test is full.

        Ids and directions go by arrival, as iperf3 gives them by accept
        order (the client opens its streams one after the other): the
        receiving streams first, then the sending ones. Each connection's
        thread reads its cookie on its own, so threads may come here out of
        order; ``wait_streams`` sorts them.
        """
        with self.ready:
            if len(self._arrived) >= self.expected:
                return False
            self._arrived.append((order, Stream(0, False, conn=conn, dgram=dgram)))
            self.ready.notify_all()
            return True

    def wait_streams(self, timeout: float) -> bool:
        """Wait for every stream; then number them and set their directions."""
        with self.ready:
            came = self.ready.wait_for(lambda: len(self._arrived) >= self.expected, timeout)
            arrived = [s for _, s in sorted(self._arrived, key=lambda pair: pair[0])]
            for k, (sid, stream) in enumerate(zip(stream_ids(len(arrived)), arrived, strict=True)):
                stream.id, stream.sending = sid, k >= self.n_receive
            self.streams = arrived
            return came


class BenchServer:
    """Serves iperf3 tests (and latency echo) on ``listener`` until ``stop``.

    Args:
        listener: where clients connect.
        log: one line per problem (a client's bad input, a failed test).
        out: the iperf3-style report of every test (None: none).
        once: stop after the first test.
        json_output: report (and answer --get-server-output) in JSON.
        interval: seconds between the report's interval lines.
    """

    def __init__(
        self,
        listener: sync.Listener,
        *,
        log: TextIO | None = None,
        out: TextIO | None = None,
        once: bool = False,
        json_output: bool = False,
        interval: float = 1.0,
    ) -> None:
        self.listener = listener
        self.log = log
        self.out = out
        self.once = once
        self.json_output = json_output
        self.interval = interval
        self._tests: dict[bytes, _TestState] = {}
        self._lock = threading.Lock()
        self._out_lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp_lock = threading.Lock()
        self._udp_waiting: _TestState | None = None
        self._udp: sync.DatagramSocket | None = None
        self._udp_host: str | None = None
        self._udp_family: int = socket.AF_UNSPEC
        self._udp_arrivals = itertools.count()

    @classmethod
    def bind(
        cls, host: str | None, port: int, family: int = socket.AF_UNSPEC, **kwargs: Any
    ) -> BenchServer:
        listener = sync.open_listener(InetEndpoint(host, port), family=family, timeout=None)
        server = cls(listener, **kwargs)
        try:
            # The requested family, not the listener's: AF_INET6 would mean
            # IPv6 only, where the listener may be dual-stack.
            sock = bind_socket(
                InetEndpoint(host, server.port), type=socket.SOCK_DGRAM, family=family
            )
        except SocketkitError:
            listener.close()
            raise
        server._udp = sync.DatagramSocket(sock, timeout=None)
        server._udp_host = host
        server._udp_family = family
        return server

    @property
    def port(self) -> int:
        port = self.listener.port
        assert port is not None  # an IP listener (see ``bind``)
        return port

    def _say(self, text: str) -> None:
        if self.log is not None:
            with self._out_lock:
                self.log.write(text + "\n")
                self.log.flush()

    def report(self, text: str) -> None:
        """Print one test's report (text or JSON) on the server's output."""
        if self.out is not None:
            with self._out_lock:
                self.out.write(text + "\n")
                self.out.flush()

    def serve_forever(self) -> None:
        """Accept and serve connections until ``stop`` is called."""
        if self._udp is not None:
            threading.Thread(target=self._udp_hellos, daemon=True).start()
        arrivals = itertools.count()
        try:
            while not self._stopping.is_set():
                try:
                    conn = self.listener.accept(timeout=0.25)  # to notice stop()
                except SocketTimeoutError:
                    continue
                except SocketkitError as exc:
                    if self._stopping.is_set():
                        break
                    self._say(f"bench server: accept failed: {exc}")
                    time.sleep(0.1)  # out of descriptors: back off, then serve on
                    continue
                order = next(arrivals)
                threading.Thread(target=self._serve, args=(conn, order), daemon=True).start()
        finally:
            self.listener.close()
            if self._udp is not None:
                self._udp.close()

    def stop(self) -> None:
        self._stopping.set()

    def _serve(self, conn: sync.Connection, order: int) -> None:
        keep = False
        try:
            proto = ControlProtocol("server")
            event = control_event(conn, proto, HELLO_TIMEOUT)
            assert isinstance(event, CookieEvent)
            cookie = event.cookie
            if cookie == ECHO_HELLO:
                self._echo(conn)
                return
            with self._lock:
                test = self._tests.get(cookie)
            if test is not None:
                if not test.add(order, conn=conn):
                    conn.send_all(State.ACCESS_DENIED.to_byte())
                    self._say(f"bench server: {conn.peer}: one stream too many for its test")
                else:
                    keep = True  # the test closes its streams
                return
            if not is_cookie(cookie):
                conn.send_all(State.ACCESS_DENIED.to_byte())
                self._say(f"bench server: {conn.peer}: not an iperf3 cookie, access denied")
                return
            _Control(self, conn, proto, cookie).serve()
        except (SocketkitError, OSError) as exc:
            self._say(f"bench server: {conn.peer}: {exc}")
        finally:
            if not keep:
                conn.close()

    def _echo(self, conn: sync.Connection) -> None:
        conn.send_all(ECHO_HELLO)
        conn.timeout = None
        while data := conn.receive_some():
            conn.send_all(data)

    # -- tests ---------------------------------------------------------------
    def register(self, test: _TestState) -> None:
        with self._lock:
            self._tests[test.cookie] = test

    def unregister(self, test: _TestState) -> None:
        with self._lock:
            self._tests.pop(test.cookie, None)

    @contextlib.contextmanager
    def udp_window(self, test: _TestState | None) -> Iterator[None]:
        """While inside, UDP hellos from the test's client address are its streams.

        One test at a time (the hello carries no cookie); it must be open
        before CREATE_STREAMS goes out, or an early hello would be dropped.
        """
        if test is None:
            yield
            return
        with self._udp_lock:
            with self._lock:
                self._udp_waiting = test
            try:
                yield
            finally:
                with self._lock:
                    self._udp_waiting = None

    def _udp_hellos(self) -> None:
        udp = self._udp
        assert udp is not None
        while not self._stopping.is_set():
            try:
                data, address = udp.receive_from(timeout=0.25)
            except SocketTimeoutError:
                continue
            except SocketkitError:
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                test = self._udp_waiting
            host = str(address[0]) if isinstance(address, tuple) else ""
            if test is None or plain_host(host) != plain_host(test.peer_host) or len(data) != 4:
                continue  # a stray datagram, or a late one from a finished test
            try:
                dgram = self._udp_stream(address)
                if not test.add(next(self._udp_arrivals), dgram=dgram):
                    dgram.close()
            except (SocketkitError, OSError) as exc:
                self._say(f"bench server: UDP stream from {host}: {exc}")

    def _udp_stream(self, address: Any) -> sync.DatagramSocket:
        """A socket of the client's own on the test's port, connected to it; replies."""
        sock = bind_socket(
            InetEndpoint(self._udp_host, self.port), type=socket.SOCK_DGRAM, family=self._udp_family
        )
        try:
            sock.connect(address)
            dgram = sync.DatagramSocket(sock, timeout=None)
            dgram.send(UDP_CONNECT_REPLY)
        except (OSError, SocketkitError):
            sock.close()
            raise
        return dgram


class _Control:
    """One test's control connection, from the cookie to IPERF_DONE."""

    def __init__(
        self, server: BenchServer, conn: sync.Connection, proto: ControlProtocol, cookie: bytes
    ) -> None:
        self.server = server
        self.conn = conn
        self.proto = proto
        self.cookie = cookie
        self.lines: list[str] = []

    def _event(self, timeout: float | None) -> Event:
        return control_event(self.conn, self.proto, timeout)

    def serve(self) -> None:
        server, conn, proto = self.server, self.conn, self.proto
        conn.send_all(proto.send_state(State.PARAM_EXCHANGE))
        try:
            event = self._event(HELLO_TIMEOUT)
        except UnsupportedOption as exc:
            conn.send_all(proto.send_server_error(exc.code))
            raise
        except FramingError:  # garbage, an oversized JSON, a bad field
            with contextlib.suppress(SocketkitError):
                conn.send_all(proto.send_server_error(IERECVPARAMS))
            raise
        assert isinstance(event, ParamsEvent)
        params = event.params
        peer_host = conn.socket.getpeername()[0]
        test = _TestState(self.cookie, params, str(peer_host))
        host, port = conn.peer.rsplit(":", 1)
        self._line(f"Accepted connection from {host.strip('[]')}, port {port}")
        server.register(test)
        try:
            self._run(test)
        finally:
            server.unregister(test)
            for s in test.streams:
                s.close()
            if server.once:
                server.stop()

    def _line(self, text: str) -> None:
        self.lines.append(text)

    def _run(self, test: _TestState) -> None:
        server, conn, proto, params = self.server, self.conn, self.proto, test.params
        with server.udp_window(test if params.protocol == "udp" else None):
            conn.send_all(proto.send_state(State.CREATE_STREAMS))
            came = test.wait_streams(STREAMS_TIMEOUT)
        if not came:
            raise ProtocolError(
                f"{len(test.streams)} of {test.expected} streams came within {STREAMS_TIMEOUT:g} s"
            )
        streams = list(test.streams)
        for s in streams:
            set_window(s.sock, params.window)
            note_addresses(s)
            self._line(
                f"[{s.fd:>3}] local {s.local[0]} port {s.local[1]} connected to "
                f"{s.remote[0]} port {s.remote[1]}"
            )
        cpu0, wall0 = os.times(), time.monotonic()
        conn.send_all(proto.send_state(State.TEST_START))
        conn.send_all(proto.send_state(State.TEST_RUNNING))
        run = self._start(test, streams)
        threads = start_workers(streams, run)
        ended = threading.Event()
        omitted: dict[int, int] = {}
        done: Callable[[float], bool] = ended.wait
        if params.omit:
            done = with_omit(ended.wait, streams, run.start + params.omit, omitted)
        samples: list[IntervalSample] = []
        sampler = threading.Thread(
            target=lambda: samples.extend(
                sample_intervals(
                    lambda: ([s.bytes for s in streams], [s.packets for s in streams]),
                    run.start,
                    server.interval,
                    done,
                    omit=float(params.omit),
                )
            ),
            daemon=True,
        )
        sampler.start()
        try:
            wait = params.time + params.omit + CONTROL_GRACE if params.time else None
            event = self._event(wait)
        finally:
            ended.set()
            run.stop.set()
        if not isinstance(event, StateEvent) or event.state != State.TEST_END:
            raise ProtocolError(f"the client ended the test with {event}")
        senders = [t for s, t in zip(streams, threads, strict=True) if s.sending]
        join_all(senders, END_TIMEOUT)
        retransmits = {
            s.id: r
            for s in streams
            if s.sending and s.conn is not None and (r := tcp_retransmits(s.sock)) is not None
        }
        for s in streams:
            if s.sending and s.conn is not None:
                with contextlib.suppress(SocketkitError):
                    s.conn.shutdown_write()  # the client reads to the end of stream
        conn.send_all(proto.send_state(State.EXCHANGE_RESULTS))
        event = self._event(END_TIMEOUT)
        if not isinstance(event, ResultsEvent):
            raise ProtocolError(f"the client sent {event} where iperf3 sends its results")
        peer = event.results
        sent_by_client = {r.id: r for r in peer.streams}
        for s in streams:
            far = sent_by_client.get(s.id)
            if not s.sending and far is not None:
                s.target = far.packets if params.protocol == "udp" else far.bytes
            s.stop = True
        join_all(threads, END_TIMEOUT)
        sampler.join(END_TIMEOUT)
        cpu = cpu_percent(cpu0, wall0)
        doc = build_document(
            role="server",
            params=params,
            streams=streams,
            peer=peer,
            intervals=samples,
            start=start_section(
                params,
                self.cookie,
                streams,
                {
                    "accepted_connection": {
                        "host": test.peer_host,
                        "port": conn.socket.getpeername()[1],
                    }
                },
            ),
            cpu=cpu,
            retransmits=retransmits,
            omitted_bytes=omitted,
        )
        text = "\n".join([*self.lines, text_report(doc)])
        ours = stream_results(streams, cpu, retransmits, omitted)
        if params.get_server_output:
            if server.json_output:
                ours = _with_output(ours, json_doc=doc)
            else:
                ours = _with_output(ours, text=text + "\n")
        conn.send_all(proto.send_results(ours))
        conn.send_all(proto.send_state(State.DISPLAY_RESULTS))
        with contextlib.suppress(SocketkitError):
            self._event(END_TIMEOUT)  # IPERF_DONE, or the client just closes
        server.report(json.dumps(doc, indent=2) if server.json_output else text)

    def _start(self, test: _TestState, streams: list[Stream]) -> Run:
        params = test.params
        budget_total = params.num or params.blockcount * params.length
        run = Run(
            length=params.length,
            udp=params.protocol == "udp",
            rate=float(params.bandwidth),
            budget=Budget(budget_total) if budget_total else None,
            counters_64bit=params.udp_counters_64bit,
        )
        run.start = time.monotonic()
        socketkit_client = (params.client_version or "").startswith("socketkit")
        if params.time and not budget_total:
            margin = 0.0 if socketkit_client else REVERSE_MARGIN
            run.deadline = run.start + params.omit + params.time - margin
        # An iperf3 client counts only what it reads before its clock ends:
        # the senders wait for their data to be acknowledged when they stop.
        run.flush_on_stop = not socketkit_client
        return run


def _with_output(
    results: Results, *, text: str | None = None, json_doc: dict[str, Any] | None = None
) -> Results:
    return Results(
        streams=results.streams,
        cpu_util_total=results.cpu_util_total,
        cpu_util_user=results.cpu_util_user,
        cpu_util_system=results.cpu_util_system,
        sender_has_retransmits=results.sender_has_retransmits,
        server_output_text=text,
        server_output_json=json_doc,
    )
