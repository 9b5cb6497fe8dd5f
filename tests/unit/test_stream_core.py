"""The sans-I/O stream core that both connection layers loop over.

Bytes in (``feed``; ``b""`` is the end of stream), answers out (``next_*``,
or ``NEED_DATA``), and the error wording both layers share. Checked whole,
byte by byte, and under hypothesis for any split of the stream. Opens no
socket.
"""

from __future__ import annotations

import errno
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketkit._stream import NEED_DATA, StreamCore
from socketkit.errors import (
    BrokenError,
    ClosedError,
    IncompleteReadError,
    SocketTimeoutError,
    UnsupportedError,
)
from socketkit.framing import LengthPrefixedCodec, LineCodec

PEER = "127.0.0.1:8080"


def core_with(*chunks: bytes) -> StreamCore:
    core = StreamCore(PEER)
    for chunk in chunks:
        core.feed(chunk)
    return core


# -- answers ------------------------------------------------------------------


def test_nothing_yet_needs_data() -> None:
    core = StreamCore(PEER)
    assert core.next_some(10) is NEED_DATA
    assert core.next_exactly(1) is NEED_DATA
    assert core.next_message(LineCodec()) is NEED_DATA
    assert not core.at_eof


def test_next_some_takes_at_most_max_bytes() -> None:
    core = core_with(b"0123456789")
    assert core.next_some(3) == b"012"
    assert core.next_some(100) == b"3456789"
    assert core.next_some(100) is NEED_DATA


def test_next_exactly_waits_for_all_bytes_and_leaves_them_buffered() -> None:
    core = core_with(b"ab")
    assert core.next_exactly(4) is NEED_DATA
    core.feed(b"cdef")
    assert core.next_exactly(4) == b"abcd"
    assert core.next_some(10) == b"ef"


def test_end_of_stream_answers_instead_of_needing_data() -> None:
    core = core_with(b"tail", b"")
    assert core.eof
    assert not core.at_eof
    assert core.next_message(LineCodec()) == b"tail"  # a last line without a newline
    assert core.at_eof
    assert core.next_some(10) == b""
    assert core.next_message(LineCodec()) is None  # a clean end of stream


def test_end_of_stream_inside_exactly_keeps_the_partial_bytes() -> None:
    core = core_with(b"abc", b"")
    with pytest.raises(IncompleteReadError) as info:
        core.next_exactly(10)
    assert info.value.partial == b"abc"
    assert info.value.expected == 10
    assert str(info.value) == f"{PEER} closed the connection after 3 of 10 bytes"
    assert core.at_eof


def test_end_of_stream_inside_a_frame() -> None:
    core = core_with(b"\x00\x00\x00\x05ab", b"")
    with pytest.raises(IncompleteReadError) as info:
        core.next_message(LengthPrefixedCodec())
    assert info.value.partial == b"\x00\x00\x00\x05ab"


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_split_gives_the_same_lines(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(m + b"\n" for m in messages)
    points = sorted({c for c in cuts if c <= len(stream)} | {0, len(stream)})
    core = StreamCore(PEER)
    got: list[bytes | None] = []
    for start, end in itertools.pairwise(points):  # distinct points: no b"" (end of stream)
        core.feed(stream[start:end])
        while (answer := core.next_message(LineCodec())) is not NEED_DATA:
            got.append(answer)
    core.feed(b"")
    assert core.next_message(LineCodec()) is None
    assert got == [m.removesuffix(b"\r") for m in messages]  # CRLF is a line end too


# -- state --------------------------------------------------------------------


def test_closed_and_half_closed_checks() -> None:
    core = StreamCore(PEER)
    core.check_open()
    core.check_send()
    core.write_shut = True
    with pytest.raises(ClosedError, match="this side already shut down writing"):
        core.check_send()
    core.closed = True
    with pytest.raises(ClosedError) as info:
        core.check_open()
    assert str(info.value) == f"connection to {PEER} is already closed"


def test_half_close_over_tls_is_unsupported() -> None:
    core = StreamCore(PEER)
    core.check_half_close(tls=False)
    with pytest.raises(UnsupportedError) as info:
        core.check_half_close(tls=True)
    assert str(info.value) == f"half-close over TLS is not supported on the connection to {PEER}"


# -- error wording ------------------------------------------------------------


@pytest.mark.parametrize("exc", [TimeoutError(), BlockingIOError(errno.EAGAIN, "again")])
def test_timeouts_and_eagain_are_timeouts(exc: OSError) -> None:
    error = StreamCore(PEER).io_error(exc, "receive", 1.5)
    assert isinstance(error, SocketTimeoutError)
    assert error.phase == "receive"
    assert "timed out after 1.5 s" in str(error)


def test_send_error_says_how_much_was_sent() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    error = StreamCore(PEER).send_error(reset, 1.0, 3, 10)
    assert isinstance(error, BrokenError)
    assert error.errno == errno.ECONNRESET
    assert str(error).endswith(" (3 of 10 bytes sent)")
    unknown = StreamCore(PEER).send_error(reset, 1.0, None, 10)
    assert "bytes sent" not in str(unknown)


def test_half_close_error_keeps_the_errno() -> None:
    error = StreamCore(PEER).half_close_error(OSError(errno.ENOTCONN, "not connected"))
    assert str(error) == f"cannot half-close the connection to {PEER}: not connected"
    assert error.errno == errno.ENOTCONN
