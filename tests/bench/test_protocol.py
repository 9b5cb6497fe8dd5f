"""iperf3's control protocol, sans-I/O: whole exchanges, bad fields, and fuzzing.

No sockets here: bytes go from one ``ControlProtocol`` to the other.
"""

from __future__ import annotations

import itertools
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketkit.bench._protocol import (
    COOKIE_SIZE,
    MAX_BUFFERED,
    MAX_PARAMS_SIZE,
    NEED_DATA,
    ControlProtocol,
    CookieEvent,
    ParamsEvent,
    ProtocolError,
    RefusedError,
    Results,
    ResultsEvent,
    State,
    StateEvent,
    StreamResult,
    UdpHeader,
    UnsupportedOption,
    is_cookie,
    make_cookie,
)
from socketkit.bench._protocol import TestParams as Params
from socketkit.errors import MessageTooLargeError, SocketkitError


def _events(proto: ControlProtocol, data: bytes, chunk: int = 0) -> list[object]:
    """Feed ``data`` (in ``chunk``-byte pieces if given) and collect the events."""
    out: list[object] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        proto.receive_data(piece)
        while (event := proto.next_event()) is not NEED_DATA:
            out.append(event)
    return out


def _json_frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack("!I", len(body)) + body


def test_cookie_is_iperf3s_alphabet_and_length() -> None:
    cookie = make_cookie()
    assert len(cookie) == COOKIE_SIZE
    assert is_cookie(cookie)
    assert not is_cookie(b"A" * 36 + b"\0")
    assert not is_cookie(cookie[:-1] + b"a")


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_a_whole_test_from_cookie_to_iperf_done(chunk: int) -> None:
    """Both sides of one exchange, each byte stream split every ``chunk`` bytes."""
    client, server = ControlProtocol("client"), ControlProtocol("server")
    cookie = make_cookie()
    assert _events(server, client.send_cookie(cookie), chunk) == [CookieEvent(cookie)]
    assert _events(client, server.send_state(State.PARAM_EXCHANGE), chunk) == [
        StateEvent(State.PARAM_EXCHANGE)
    ]
    params = Params(protocol="udp", time=3, parallel=2, length=1400, bandwidth=10**8)
    (got,) = _events(server, client.send_params(params), chunk)
    assert isinstance(got, ParamsEvent)
    assert got.params.length == 1400
    assert got.params.parallel == 2
    assert got.params.protocol == "udp"
    for state in (State.CREATE_STREAMS, State.TEST_START, State.TEST_RUNNING):
        assert _events(client, server.send_state(state), chunk) == [StateEvent(state)]
    assert _events(server, client.send_state(State.TEST_END), chunk) == [StateEvent(State.TEST_END)]
    _events(client, server.send_state(State.EXCHANGE_RESULTS), chunk)
    mine = Results(streams=(StreamResult(id=1, bytes=10, packets=2), StreamResult(3, 5)))
    (theirs,) = _events(server, client.send_results(mine), chunk)
    assert isinstance(theirs, ResultsEvent)
    assert theirs.results == mine
    back = Results(streams=(StreamResult(id=1, bytes=9, errors=1, jitter=0.002),))
    (answer,) = _events(client, server.send_results(back), chunk)
    assert isinstance(answer, ResultsEvent)
    assert answer.results.streams[0].errors == 1
    _events(client, server.send_state(State.DISPLAY_RESULTS), chunk)
    assert _events(server, client.send_state(State.IPERF_DONE), chunk) == [
        StateEvent(State.IPERF_DONE)
    ]


def _server_after_cookie() -> ControlProtocol:
    server = ControlProtocol("server")
    _events(server, make_cookie())
    server.send_state(State.PARAM_EXCHANGE)
    return server


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sctp": True}, UnsupportedOption),
        ({"tcp": True, "zerocopy": 1}, UnsupportedOption),
        ({"tcp": True, "authtoken": "x"}, UnsupportedOption),
        ({"udp": True, "len": 70000}, UnsupportedOption),
        ({"tcp": True, "parallel": 500}, UnsupportedOption),
        ({"tcp": True, "udp": True}, ProtocolError),
        ({"omit": 0}, ProtocolError),
        ({"tcp": True, "time": "ten"}, ProtocolError),
        ({"tcp": True, "time": -1}, ProtocolError),
        ({"tcp": True, "parallel": 0}, ProtocolError),
        ({"tcp": True, "len": True}, ProtocolError),
        ({"tcp": True, "reverse": True, "bidirectional": True}, ProtocolError),
    ],
)
def test_every_parameter_is_validated(params: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        _events(_server_after_cookie(), _json_frame(params))


def test_unsupported_option_carries_iperf3s_error_number() -> None:
    with pytest.raises(UnsupportedOption) as info:
        _events(_server_after_cookie(), _json_frame({"sctp": True}))
    assert info.value.code == 18  # IENOSCTP


def test_an_oversized_json_is_refused_from_its_length_alone() -> None:
    server = _server_after_cookie()
    with pytest.raises(MessageTooLargeError):
        _events(server, struct.pack("!I", MAX_PARAMS_SIZE + 1))


@pytest.mark.parametrize(
    "body", [b"{", b"[1, 2]", b"\xff\xfe", b"[" * 30_000 + b"]" * 30_000, b'{"a": NaN}']
)
def test_bad_json_is_a_protocol_error(body: bytes) -> None:
    server = _server_after_cookie()
    frame = struct.pack("!I", len(body)) + body
    with pytest.raises((ProtocolError, MessageTooLargeError)):
        _events(server, frame)


def test_states_out_of_turn_and_unknown_are_refused() -> None:
    client = ControlProtocol("client")
    with pytest.raises(ProtocolError, match="TEST_RUNNING"):
        _events(client, State.TEST_RUNNING.to_byte())
    with pytest.raises(ProtocolError, match="unknown"):
        _events(ControlProtocol("client"), b"\x63")
    server = _server_after_cookie()
    _events(server, _json_frame({"tcp": True}))
    with pytest.raises(ProtocolError, match="only a server"):
        _events(server, State.EXCHANGE_RESULTS.to_byte())


def test_server_refusals_become_one_line_errors() -> None:
    with pytest.raises(RefusedError, match="denied"):
        _events(ControlProtocol("client"), State.ACCESS_DENIED.to_byte())
    error = State.SERVER_ERROR.to_byte() + struct.pack("!ii", 13, 0)
    with pytest.raises(RefusedError, match="does not implement"):
        _events(ControlProtocol("client"), error, chunk=3)


def test_end_of_stream_mid_message_is_a_broken_connection() -> None:
    server = _server_after_cookie()
    server.receive_data(b"\x00\x00")
    server.receive_data(b"")
    with pytest.raises(SocketkitError, match="closed the control connection"):
        server.next_event()


def test_udp_header_round_trip_both_widths() -> None:
    for wide in (False, True):
        buf = bytearray(64)
        UdpHeader.pack_into(buf, 7, 3_000_000_123_456, wide)
        header = UdpHeader.unpack(buf, wide)
        assert header == UdpHeader(3000, 123, 7)
        assert UdpHeader.unpack(buf[: UdpHeader.size(wide) - 1], wide) is None


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["client", "server"]),
    data=st.binary(max_size=2048),
    cuts=st.lists(st.integers(min_value=0, max_value=2048), max_size=8),
    after_cookie=st.booleans(),
)
def test_arbitrary_bytes_in_any_split_never_crash(
    role: str, data: bytes, cuts: list[int], after_cookie: bool
) -> None:
    """Garbage decodes, or raises one of our errors; memory stays under the limit."""
    proto = ControlProtocol(role)
    if role == "server" and after_cookie:
        _events(proto, make_cookie())
        proto.send_state(State.PARAM_EXCHANGE)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    try:
        for a, b in itertools.pairwise(bounds):
            proto.receive_data(data[a:b])
            while proto.next_event() is not NEED_DATA:
                pass
        proto.receive_data(b"")
        while proto.next_event() is not NEED_DATA:
            pass
    except SocketkitError:
        pass
    assert len(proto._buffer) <= MAX_BUFFERED


def test_a_flood_ahead_of_the_protocol_is_cut_off() -> None:
    proto = ControlProtocol("client")
    proto.expecting = None  # our turn to send: nothing is decoded meanwhile
    with pytest.raises(ProtocolError, match="ahead"):
        for _ in range(MAX_BUFFERED // 65536 + 2):
            proto.receive_data(bytes(65536))


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "tcp",
        "udp",
        "time",
        "num",
        "parallel",
        "len",
        "reverse",
        "bidirectional",
        "window",
        "bandwidth",
        "omit",
        "blockcount",
        "zerocopy",
        "streams",
        "id",
        "bytes",
        "retransmits",
        "jitter",
        "errors",
        "packets",
        "cpu_util_total",
        "cpu_util_user",
        "cpu_util_system",
        "sender_has_retransmits",
        "server_output_json",
        "server_output_text",
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    obj=st.dictionaries(_keys, _json_values | st.lists(st.dictionaries(_keys, _json_values))),
    what=st.sampled_from(["params", "results"]),
)
def test_arbitrary_json_fields_decode_or_raise_our_error(obj: dict[str, object], what: str) -> None:
    """Any JSON object as parameters or results: a validated event or our error."""
    if what == "params":
        proto = _server_after_cookie()
    else:
        proto = ControlProtocol("client")
        for state in (
            State.PARAM_EXCHANGE,
            State.CREATE_STREAMS,
            State.TEST_START,
            State.TEST_RUNNING,
            State.EXCHANGE_RESULTS,
        ):
            if state == State.CREATE_STREAMS:
                proto.send_params(Params())
            _events(proto, state.to_byte())
        proto.send_results(Results(streams=()))
    try:
        events = _events(proto, _json_frame(obj))
    except SocketkitError:
        return
    assert len(events) == 1
    assert isinstance(events[0], ParamsEvent | ResultsEvent)
