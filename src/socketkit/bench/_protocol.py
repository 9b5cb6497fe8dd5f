"""iperf3's control protocol, sans-I/O: bytes in, events out; calls in, bytes out.

The wire (iperf3 3.x, ``src/iperf_api.c``, ``iperf_client_api.c``,
``iperf_server_api.c``), all integers in network byte order:

- The client opens the control connection and sends a 37-byte cookie: 36
  characters from ``a-z2-7`` and a NUL. Each data stream (a TCP connection to
  the same port) starts with the same cookie, which is how the server ties
  streams to a test.
- The server drives the test with one signed byte per state change
  (``State``). After ``PARAM_EXCHANGE`` the client sends its parameters as one
  JSON object prefixed by its length (u32); after ``CREATE_STREAMS`` it opens
  the streams; ``TEST_START`` and ``TEST_RUNNING`` start the clock. The
  client ends the test with ``TEST_END``; the server answers
  ``EXCHANGE_RESULTS``, the client sends its results (length-prefixed JSON)
  and reads the server's, then the server sends ``DISPLAY_RESULTS`` and the
  client ``IPERF_DONE``.
- ``ACCESS_DENIED`` (-1) is a busy server or a wrong cookie; ``SERVER_ERROR``
  (-2) is followed by iperf3's error number and ``errno`` (two i32).
- UDP streams go to the same port number over UDP: the client sends 4 bytes
  (``UDP_CONNECT_MSG``), the server replies ``UDP_CONNECT_REPLY`` from a
  socket connected to that client. iperf3 writes both as a host-order
  ``unsigned int``; we do the same and accept either byte order back.
  Each datagram starts with the send time (u32 seconds, u32 microseconds)
  and a sequence number from 1 (u32, or u64 with ``udp_counters_64bit``).

``ControlProtocol`` holds one side of the control connection. It buffers at
most ``MAX_BUFFERED`` bytes, validates every field of every message it
decodes, and raises ``ProtocolError`` (a ``FramingError`` with ``remote``
True) for anything iperf3 would never send, so garbage, an oversized JSON or
a message out of turn never becomes a wrong figure. The I/O layers feed it
(``receive_data``), ask ``next_event`` until ``NEED_DATA``, and send what its
``send_*`` methods return.
"""

from __future__ import annotations

import enum
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import BrokenError, FramingError, UnsupportedError
from ..framing import LengthPrefixedCodec, ReceiveBuffer

__all__ = [
    "COOKIE_SIZE",
    "ECHO_HELLO",
    "MAX_PARAMS_SIZE",
    "MAX_RESULTS_SIZE",
    "NEED_DATA",
    "UDP_CONNECT_MSG",
    "UDP_CONNECT_REPLY",
    "ControlProtocol",
    "CookieEvent",
    "NeedData",
    "ParamsEvent",
    "ProtocolError",
    "RefusedError",
    "Results",
    "ResultsEvent",
    "State",
    "StateEvent",
    "StreamResult",
    "TestParams",
    "UdpHeader",
    "is_cookie",
    "make_cookie",
]

#: 36 characters and a NUL (iperf3 ``COOKIE_SIZE``, "the size of an ascii uuid").
COOKIE_SIZE = 37
COOKIE_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
#: What socketkit's latency client sends first: the size of a cookie, but not
#: one (it has dashes), so a socketkit bench server turns into an echo server,
#: an echo service returns it unchanged, and an iperf3 server answers with a
#: state byte, which the client then reports.
ECHO_HELLO = b"socketkit-bench-echo".ljust(COOKIE_SIZE - 1, b"-") + b"\x00"

#: 64 KiB: iperf3's parameters are a few hundred bytes.
MAX_PARAMS_SIZE = 64 * 1024
#: 8 MiB: results carry the server's whole output with --get-server-output
#: (about 300 bytes per stream and interval in JSON): an hour at 1 s with 16
#: streams fits; a hostile length prefix cannot reserve more.
MAX_RESULTS_SIZE = 8 * 1024 * 1024
#: Bytes a peer may send ahead of what the protocol is ready to decode.
MAX_BUFFERED = MAX_RESULTS_SIZE + 64

#: Limits iperf3 itself enforces (``iperf.h``, ``iperf_api.h``).
MAX_STREAMS = 128
MAX_TIME = 86400
MAX_TCP_BLOCK = 1024 * 1024
MAX_UDP_BLOCK = 65535 - 8 - 20
MIN_UDP_BLOCK = 16
MAX_WINDOW = 512 * 1024 * 1024
#: iperf3's defaults when the client leaves "len" out.
DEFAULT_TCP_BLOCK = 128 * 1024
DEFAULT_UDP_BLOCK = 1460

UDP_CONNECT_MSG = struct.pack("=I", 0x36373839)
UDP_CONNECT_REPLY = struct.pack("=I", 0x39383736)
_UDP_REPLIES = {
    struct.pack(order + "I", value)
    for order in "<>"
    for value in (0x39383736, 987654321)  # and the legacy value of old servers
}

_I32 = struct.Struct("!i")
#: UDP datagram headers: seconds, microseconds, sequence (u32 or u64).
_UDP_SHORT = struct.Struct("!III")
_UDP_LONG = struct.Struct("!IIQ")


class State(enum.IntEnum):
    """The control bytes (iperf3 ``iperf_api.h``); sent as one signed byte."""

    TEST_START = 1
    TEST_RUNNING = 2
    TEST_END = 4
    PARAM_EXCHANGE = 9
    CREATE_STREAMS = 10
    SERVER_TERMINATE = 11
    CLIENT_TERMINATE = 12
    EXCHANGE_RESULTS = 13
    DISPLAY_RESULTS = 14
    IPERF_START = 15
    IPERF_DONE = 16
    ACCESS_DENIED = -1
    SERVER_ERROR = -2

    def to_byte(self) -> bytes:
        return struct.pack("!b", self.value)


#: iperf3's error numbers (``iperf_api.h``) that a server sends with
#: SERVER_ERROR and their meaning, for the client's one-line message.
IPERF_ERRORS: Final = {
    6: "too many parallel streams",
    7: "block size too large",
    8: "socket buffer size too large",
    13: "an option the server does not implement",
    18: "no SCTP support",
    20: "invalid block size",
    27: "total requested bandwidth above the server's limit",
    114: "the server could not read the parameters",
    117: "the server could not read the results",
    119: "the client has terminated",
    121: "the server is busy running a test",
    131: "protocol does not exist",
    142: "test authorization failed",
    200: "the server could not create a stream",
}
#: Error numbers our server sends.
IEBLOCKSIZE = 7
IEUNIMP = 13
IENOSCTP = 18
IEUDPBLOCKSIZE = 20
IERECVPARAMS = 114
IEAUTHTEST = 142
IENUMSTREAMS = 6
IEBUFSIZE = 8


class ProtocolError(FramingError):
    """The peer broke iperf3's protocol (garbage, a message out of turn, a bad field)."""


class RefusedError(BrokenError):
    """The peer refused or ended the test: access denied, a server error, terminate."""


class UnsupportedOption(UnsupportedError):
    """A parameter the server understands but does not implement; carries iperf3's number."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def make_cookie() -> bytes:
    """A fresh cookie: 36 random characters from iperf3's alphabet, then NUL."""
    return bytes(COOKIE_ALPHABET[b % 32] for b in os.urandom(36)) + b"\x00"


def is_cookie(data: bytes) -> bool:
    return (
        len(data) == COOKIE_SIZE and data[-1] == 0 and all(c in COOKIE_ALPHABET for c in data[:-1])
    )


# -- parameters -------------------------------------------------------------
def _int(obj: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"iperf3 parameter {key!r} is not a number: {value!r}")
    if value != value or not low <= value <= high:  # NaN fails the first test
        raise ProtocolError(f"iperf3 parameter {key!r} out of range [{low}, {high}]: {value!r}")
    return int(value)


def _flag(obj: dict[str, Any], key: str) -> bool:
    # iperf3 tests presence (cJSON_GetObjectItem), whatever the value.
    return key in obj and obj[key] is not False


@dataclass(frozen=True, slots=True)
class TestParams:
    """One test's parameters, as iperf3's ``send_parameters`` writes them.

    Attributes:
        protocol: ``tcp`` or ``udp``.
        time: seconds (iperf3 sends whole seconds; 0 with ``num`` or
            ``blockcount`` ends on a count instead, and 0 alone runs until
            the client stops).
        num: bytes to send (-n); 0: not a byte count.
        blockcount: blocks to send (-k); 0: not a block count.
        parallel: streams per direction (-P).
        reverse: the server sends (-R). bidirectional: both send (--bidir).
        length: bytes per write or datagram (-l).
        bandwidth: bits per second per stream (-b); 0: unlimited.
        omit: seconds at the start left out of the figures (-O).
        window: socket buffer size (-w); 0: the system's.
        get_server_output: the client wants the server's report in the results.
        udp_counters_64bit: UDP sequence numbers are u64.
        client_version: the client's version string, if it sent one.
    """

    protocol: str = "tcp"
    time: float = 10
    num: int = 0
    blockcount: int = 0
    parallel: int = 1
    reverse: bool = False
    bidirectional: bool = False
    length: int = DEFAULT_TCP_BLOCK
    bandwidth: int = 0
    omit: int = 0
    window: int = 0
    get_server_output: bool = False
    udp_counters_64bit: bool = False
    client_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {self.protocol: True, "omit": self.omit}
        # iperf3 reads "time" as an integer; a fraction of a second goes
        # as a number and a C server rounds it down (it only sets a timer).
        obj["time"] = int(self.time) if float(self.time).is_integer() else self.time
        obj |= {"num": self.num, "blockcount": self.blockcount, "parallel": self.parallel}
        if self.reverse:
            obj["reverse"] = True
        if self.bidirectional:
            obj["bidirectional"] = True
        if self.window:
            obj["window"] = self.window
        obj["len"] = self.length
        if self.bandwidth:
            obj["bandwidth"] = self.bandwidth
        obj["pacing_timer"] = 1000
        if self.get_server_output:
            obj["get_server_output"] = 1
        if self.udp_counters_64bit:
            obj["udp_counters_64bit"] = 1
        obj["client_version"] = self.client_version or "socketkit"
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TestParams:
        """Validate a client's parameters.

        Raises:
            ProtocolError: a field has the wrong type or is out of range.
            UnsupportedOption: SCTP, zero copy, authentication and the like.
        """
        if "sctp" in obj:
            raise UnsupportedOption("SCTP is not supported", code=IENOSCTP)
        for key, what in (
            ("authtoken", "authentication"),
            ("zerocopy", "zero copy (-Z)"),
            ("MSS", "setting the MSS (-M)"),
            ("fqrate", "fair-queue pacing (--fq-rate)"),
            ("congestion", "choosing the congestion control (-C)"),
            ("TOS", "setting the TOS (-S)"),
            ("flowlabel", "an IPv6 flow label (-L)"),
            ("server_affinity", "server CPU affinity (-A)"),
            ("dont_fragment", "--dont-fragment"),
        ):
            if key in obj and obj[key] not in (0, False, None):
                raise UnsupportedOption(f"{what} is not supported", code=IEUNIMP)
        if _flag(obj, "udp") == _flag(obj, "tcp"):
            raise ProtocolError("iperf3 parameters name neither or both of tcp and udp")
        protocol = "udp" if _flag(obj, "udp") else "tcp"
        raw_time = obj.get("time", 10)
        if isinstance(raw_time, bool) or not isinstance(raw_time, int | float):
            raise ProtocolError(f"iperf3 parameter 'time' is not a number: {raw_time!r}")
        if not 0 <= raw_time <= MAX_TIME:
            raise ProtocolError(f"iperf3 parameter 'time' out of range [0, {MAX_TIME}]")
        default_len = DEFAULT_UDP_BLOCK if protocol == "udp" else DEFAULT_TCP_BLOCK
        length = _int(obj, "len", default_len, 1, 1 << 31)
        if protocol == "udp" and not MIN_UDP_BLOCK <= length <= MAX_UDP_BLOCK:
            raise UnsupportedOption(
                f"UDP datagram size {length} outside [{MIN_UDP_BLOCK}, {MAX_UDP_BLOCK}]",
                code=IEUDPBLOCKSIZE,
            )
        if protocol == "tcp" and length > MAX_TCP_BLOCK:
            raise UnsupportedOption(f"block size {length} above {MAX_TCP_BLOCK}", code=IEBLOCKSIZE)
        parallel = obj.get("parallel", 1)
        if isinstance(parallel, int) and not isinstance(parallel, bool) and parallel > MAX_STREAMS:
            raise UnsupportedOption(f"{parallel} streams, above {MAX_STREAMS}", code=IENUMSTREAMS)
        window = _int(obj, "window", 0, 0, 1 << 31)
        if window > MAX_WINDOW:
            raise UnsupportedOption(f"window {window} above {MAX_WINDOW}", code=IEBUFSIZE)
        version = obj.get("client_version")
        reverse, bidir = _flag(obj, "reverse"), _flag(obj, "bidirectional")
        if reverse and bidir:
            raise ProtocolError("iperf3 parameters ask for both reverse and bidirectional")
        return cls(
            protocol=protocol,
            time=float(raw_time),
            num=_int(obj, "num", 0, 0, 1 << 62),
            blockcount=_int(obj, "blockcount", 0, 0, 1 << 62),
            parallel=_int(obj, "parallel", 1, 1, MAX_STREAMS),
            reverse=reverse,
            bidirectional=bidir,
            length=length,
            bandwidth=_int(obj, "bandwidth", 0, 0, 1 << 62),
            omit=_int(obj, "omit", 0, 0, MAX_TIME),
            window=window,
            get_server_output=_flag(obj, "get_server_output"),
            udp_counters_64bit=_flag(obj, "udp_counters_64bit"),
            client_version=version[:100] if isinstance(version, str) else None,
        )


# -- results ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StreamResult:
    """One stream's figures in the results exchange (iperf3 ``send_results``).

    ``bytes`` is what this side sent (a sending stream) or received; jitter
    (seconds), errors (datagrams lost) and packets (highest sequence number
    received, or datagrams sent) are UDP figures.
    """

    id: int
    bytes: int
    retransmits: int = -1
    jitter: float = 0.0
    errors: int = 0
    packets: int = 0
    start_time: float = 0.0
    end_time: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bytes": self.bytes,
            "retransmits": self.retransmits,
            "jitter": self.jitter,
            "errors": self.errors,
            "packets": self.packets,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


def _number(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ProtocolError(f"iperf3 results: {key!r} is not a number: {value!r}")
    if abs(value) > 2**64:
        raise ProtocolError(f"iperf3 results: {key!r} is out of range: {value!r}")
    return float(value)


def _signed(value: float) -> int:
    """iperf3 prints a -1 held in an unsigned 64-bit field as 2**64 - 1."""
    n = int(value)
    return n - 2**64 if n >= 2**63 else n


@dataclass(frozen=True, slots=True)
class Results:
    """One side's results (iperf3 ``send_results`` / ``get_results``)."""

    streams: tuple[StreamResult, ...]
    cpu_util_total: float = 0.0
    cpu_util_user: float = 0.0
    cpu_util_system: float = 0.0
    sender_has_retransmits: int = -1
    congestion_used: str | None = None
    server_output_text: str | None = None
    server_output_json: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "cpu_util_total": self.cpu_util_total,
            "cpu_util_user": self.cpu_util_user,
            "cpu_util_system": self.cpu_util_system,
            "sender_has_retransmits": self.sender_has_retransmits,
        }
        if self.congestion_used:
            obj["congestion_used"] = self.congestion_used
        if self.server_output_json is not None:
            obj["server_output_json"] = self.server_output_json
        elif self.server_output_text is not None:
            obj["server_output_text"] = self.server_output_text
        obj["streams"] = [s.to_json() for s in self.streams]
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Results:
        """Validate results; iperf3 requires the CPU figures and every stream field."""
        streams = obj.get("streams")
        if not isinstance(streams, list) or len(streams) > 2 * MAX_STREAMS:
            raise ProtocolError("iperf3 results: 'streams' is not a list of at most 256")
        parsed = []
        for s in streams:
            if not isinstance(s, dict):
                raise ProtocolError("iperf3 results: a stream is not an object")
            sid = _number(s, "id")
            if not sid.is_integer() or not 1 <= sid <= 2 * MAX_STREAMS + 1:
                raise ProtocolError(f"iperf3 results: bad stream id {sid!r}")
            nbytes = _number(s, "bytes")
            if nbytes < 0 or not nbytes.is_integer():
                raise ProtocolError(f"iperf3 results: bad byte count {nbytes!r}")
            parsed.append(
                StreamResult(
                    id=int(sid),
                    bytes=int(nbytes),
                    retransmits=_signed(_number(s, "retransmits")),
                    jitter=_number(s, "jitter"),
                    errors=_signed(_number(s, "errors")),
                    packets=int(_number(s, "packets")),
                    start_time=_number(s, "start_time", 0.0),
                    end_time=_number(s, "end_time", 0.0),
                )
            )
        text = obj.get("server_output_text")
        out_json = obj.get("server_output_json")
        congestion = obj.get("congestion_used")
        return cls(
            streams=tuple(parsed),
            cpu_util_total=_number(obj, "cpu_util_total"),
            cpu_util_user=_number(obj, "cpu_util_user"),
            cpu_util_system=_number(obj, "cpu_util_system"),
            sender_has_retransmits=_signed(_number(obj, "sender_has_retransmits")),
            congestion_used=congestion if isinstance(congestion, str) else None,
            server_output_text=text if isinstance(text, str) else None,
            server_output_json=out_json if isinstance(out_json, dict) else None,
        )


# -- UDP datagrams --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UdpHeader:
    """The start of every iperf3 UDP datagram: send time and sequence number."""

    seconds: int
    microseconds: int
    sequence: int

    @staticmethod
    def size(counters_64bit: bool) -> int:
        return 16 if counters_64bit else 12

    @staticmethod
    def pack_into(
        buffer: bytearray | memoryview, sequence: int, time_ns: int, counters_64bit: bool
    ) -> None:
        seconds, rest = divmod(time_ns, 1_000_000_000)
        fmt = _UDP_LONG if counters_64bit else _UDP_SHORT
        mask = 0xFFFFFFFFFFFFFFFF if counters_64bit else 0xFFFFFFFF
        fmt.pack_into(buffer, 0, seconds & 0xFFFFFFFF, rest // 1000, sequence & mask)

    @staticmethod
    def unpack(data: bytes | bytearray | memoryview, counters_64bit: bool) -> UdpHeader | None:
        """The header, or None for a datagram too short to carry one."""
        fmt = _UDP_LONG if counters_64bit else _UDP_SHORT
        if len(data) < fmt.size:
            return None
        return UdpHeader(*fmt.unpack_from(data))


def is_udp_connect_reply(data: bytes) -> bool:
    return data in _UDP_REPLIES


# -- the control connection ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StateEvent:
    state: State


@dataclass(frozen=True, slots=True)
class CookieEvent:
    cookie: bytes


@dataclass(frozen=True, slots=True)
class ParamsEvent:
    params: TestParams


@dataclass(frozen=True, slots=True)
class ResultsEvent:
    results: Results


class NeedData:
    """The type of ``NEED_DATA``."""

    def __repr__(self) -> str:
        return "NEED_DATA"


#: ``next_event`` returns this until more bytes arrive.
NEED_DATA: Final = NeedData()

Event = StateEvent | CookieEvent | ParamsEvent | ResultsEvent

#: What each side may receive after the state it last saw or sent.
_CLIENT_NEXT: Final = {
    None: {State.PARAM_EXCHANGE},
    State.PARAM_EXCHANGE: {State.CREATE_STREAMS},
    State.CREATE_STREAMS: {State.TEST_START},
    State.TEST_START: {State.TEST_RUNNING},
    State.TEST_RUNNING: {State.EXCHANGE_RESULTS},
    State.TEST_END: {State.EXCHANGE_RESULTS},
    State.EXCHANGE_RESULTS: {State.DISPLAY_RESULTS},
    State.DISPLAY_RESULTS: {State.IPERF_DONE},
}
_SERVER_RECEIVES: Final = {
    State.TEST_START,
    State.TEST_END,
    State.CLIENT_TERMINATE,
    State.IPERF_DONE,
}


class ControlProtocol:
    """One side (``client`` or ``server``) of an iperf3 control connection.

    Invariants: at most ``MAX_BUFFERED`` bytes are held; ``expecting`` names
    what the next decoded item is (``cookie``, ``state``, ``params``,
    ``results``, ``error``) or None while it is this side's turn to send.
    """

    __slots__ = ("_buffer", "_eof", "_params_codec", "_results_codec", "expecting", "role", "state")

    def __init__(self, role: str, *, max_results_size: int = MAX_RESULTS_SIZE) -> None:
        if role not in ("client", "server"):
            raise ValueError("role must be client or server")
        self.role = role
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._params_codec = LengthPrefixedCodec(MAX_PARAMS_SIZE)
        self._results_codec = LengthPrefixedCodec(max_results_size)
        #: The last state byte seen or sent.
        self.state: State | None = None
        self.expecting: str | None = "cookie" if role == "server" else "state"

    # -- receiving ------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` is the end of its stream.

        Raises:
            ProtocolError: the peer sent more than any message could need.
        """
        if not data:
            self._eof = True
            return
        self._buffer.feed(data)
        if len(self._buffer) > MAX_BUFFERED:
            raise ProtocolError(
                f"the peer sent {len(self._buffer)} bytes ahead of the protocol "
                f"(more than {MAX_BUFFERED})"
            )

    def next_event(self) -> Event | NeedData:
        """Decode the next message, or return ``NEED_DATA``.

        Raises:
            ProtocolError: garbage, a message out of turn, an invalid field.
            UnsupportedOption: (server) the client asked for something we lack.
            RefusedError: (client) the server denied, failed or ended the test.
            BrokenError: the peer closed the connection in the middle of the test.
        """
        expecting = self.expecting
        if expecting is None:
            return NEED_DATA
        if expecting == "cookie":
            data = self._buffer.maybe_extract_exactly(COOKIE_SIZE)
            if data is None:
                return self._need(f"a {COOKIE_SIZE}-byte cookie")
            self.expecting = None
            return CookieEvent(data)
        if expecting == "state":
            byte = self._buffer.maybe_extract_exactly(1)
            if byte is None:
                return self._need("a state byte")
            return self._state_event(struct.unpack("!b", byte)[0])
        if expecting == "error":
            codes = self._buffer.maybe_extract_exactly(8)
            if codes is None:
                return self._need("the error numbers after SERVER_ERROR")
            ierr, err = _I32.unpack(codes[:4])[0], _I32.unpack(codes[4:])[0]
            what = IPERF_ERRORS.get(ierr, f"iperf3 error {ierr}")
            detail = f": {os.strerror(err)}" if 0 < err < 4096 else ""
            raise RefusedError(f"the server failed the test: {what}{detail}")
        codec = self._params_codec if expecting == "params" else self._results_codec
        body = codec.maybe_decode(self._buffer)  # raises MessageTooLargeError
        if body is None:
            return self._need(f"the {expecting} JSON")
        obj = _load_json(body, expecting)
        if expecting == "params":
            self.expecting = "state"
            return ParamsEvent(TestParams.from_json(obj))
        self.expecting = "state"
        return ResultsEvent(Results.from_json(obj))

    def _need(self, what: str) -> NeedData:
        if self._eof:
            raise BrokenError(
                f"the {'client' if self.role == 'server' else 'server'} closed the control "
                f"connection while this side waited for {what}"
            )
        return NEED_DATA

    def _state_event(self, value: int) -> Event | NeedData:
        try:
            state = State(value)
        except ValueError:
            raise ProtocolError(f"unknown iperf3 state byte {value}") from None
        if self.role == "client":
            if state == State.ACCESS_DENIED:
                raise RefusedError("the server denied access (busy with another test?)")
            if state == State.SERVER_ERROR:
                self.expecting = "error"
                return self.next_event()  # raises once the error numbers are here
            if state == State.SERVER_TERMINATE:
                raise RefusedError("the server terminated the test")
            if state not in _CLIENT_NEXT.get(self.state, set()):
                raise ProtocolError(
                    f"the server sent {state.name} after {self.state.name if self.state else 'the cookie'}"
                )
            if state in (State.PARAM_EXCHANGE, State.EXCHANGE_RESULTS):
                self.expecting = None  # our turn: parameters, results
        else:
            if state not in _SERVER_RECEIVES:
                raise ProtocolError(f"the client sent {state.name}, which only a server sends")
            if state == State.IPERF_DONE:
                self.expecting = None
        self.state = state
        return StateEvent(state)

    # -- sending ---------------------------------------------------------------
    def send_cookie(self, cookie: bytes) -> bytes:
        if self.role != "client" or len(cookie) != COOKIE_SIZE:
            raise ProtocolError("only a client sends a 37-byte cookie", remote=False)
        return bytes(cookie)

    def send_state(self, state: State) -> bytes:
        """The byte announcing ``state``; moves this side's expectations on."""
        if self.role == "server":
            if state == State.PARAM_EXCHANGE:
                self.expecting = "params"
            elif state == State.EXCHANGE_RESULTS:
                self.expecting = "results"
            elif state in (State.ACCESS_DENIED, State.SERVER_ERROR, State.DISPLAY_RESULTS):
                self.expecting = "state" if state == State.DISPLAY_RESULTS else None
        elif state not in (State.TEST_END, State.IPERF_DONE, State.CLIENT_TERMINATE):
            raise ProtocolError(f"a client does not send {state.name}", remote=False)
        self.state = state
        return state.to_byte()

    def send_server_error(self, code: int, errno: int = 0) -> bytes:
        return self.send_state(State.SERVER_ERROR) + _I32.pack(code) + _I32.pack(errno)

    def send_params(self, params: TestParams) -> bytes:
        if self.role != "client" or self.state != State.PARAM_EXCHANGE:
            raise ProtocolError("parameters go from the client after PARAM_EXCHANGE", remote=False)
        self.expecting = "state"
        return self._params_codec.encode(_dump_json(params.to_json()))

    def send_results(self, results: Results) -> bytes:
        if self.state != State.EXCHANGE_RESULTS and not (
            self.role == "server" and self.expecting == "state"
        ):
            raise ProtocolError("results go after EXCHANGE_RESULTS", remote=False)
        if self.role == "client":
            self.expecting = "results"
        return self._results_codec.encode(_dump_json(results.to_json()))


def _dump_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"the {what} JSON is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"the {what} JSON is not an object")
    return obj
