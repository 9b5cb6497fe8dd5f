"""Framing codecs under hypothesis: any split, any bytes, any size.

Properties (h11's ``fuzz/afl-server.py`` idea, as property tests):

- Messages encoded and cut at arbitrary points decode to exactly the same
  messages, whatever the cuts (TCP may deliver any split).
- Raw framing preserves the concatenation of the stream.
- Arbitrary bytes either decode or raise socketkit's ``FramingError`` /
  ``IncompleteReadError``, never anything else.
- Oversized input raises ``MessageTooLargeError`` and the buffer never grows
  past the limit plus a small constant: the codec refuses "instead of growing
  a buffer" (``socketkit.framing.codecs`` docstring).

Opens no socket.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketkit.errors import FramingError, IncompleteReadError, MessageTooLargeError
from socketkit.framing import (
    Codec,
    Decoder,
    LectureCodec,
    LengthPrefixedCodec,
    LineCodec,
    RawCodec,
)

#: Per-test settings (no global profile: other suites choose their own).
#: No deadline: a loaded CI machine must not turn slowness into failure.
PROPERTY = settings(max_examples=150, deadline=None)

#: Bytes a buffer may hold beyond a codec's limit without it having raised:
#: one for a CR that may start a CRLF, four for a length prefix.
BUFFER_SLACK = 4


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, in order)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in [*points, len(data)]:
        chunks.append(data[start:point])
        start = point
    return [c for c in chunks if c]


def decode_chunks(codec: Codec, chunks: list[bytes]) -> list[bytes]:
    decoder = Decoder(codec)
    messages: list[bytes] = []
    for chunk in chunks:
        decoder.feed(chunk)
        messages.extend(decoder)
    decoder.feed(b"")
    messages.extend(decoder)
    assert not decoder.buffer
    return messages


cuts = st.lists(st.integers(min_value=0, max_value=2**16), max_size=40)

# LF-ended lines: a message may not hold LF, nor end with CR, since "a\r\n"
# reads back as "a" (see test_codecs.py, the known ambiguity of LF framing).
lf_lines = (
    st.binary(max_size=60)
    .map(lambda b: b.replace(b"\n", b""))
    .filter(lambda b: not b.endswith(b"\r"))
)
crlf_lines = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b""))


@PROPERTY
@given(messages=st.lists(lf_lines, max_size=20), cuts=cuts, final_newline=st.booleans())
def test_line_codec_any_split_gives_the_same_lines(
    messages: list[bytes], cuts: list[int], final_newline: bool
) -> None:
    codec = LineCodec(60)
    stream = b"".join(codec.encode(m) for m in messages)
    if messages and messages[-1] and not final_newline:
        stream = stream[:-1]  # the last line arrives unterminated, then EOF
    assert decode_chunks(codec, split_at(stream, cuts)) == messages


@PROPERTY
@given(messages=st.lists(crlf_lines, max_size=20), cuts=cuts)
def test_crlf_line_codec_any_split_gives_the_same_lines(
    messages: list[bytes], cuts: list[int]
) -> None:
    codec = LineCodec(60, crlf=True)
    stream = b"".join(codec.encode(m) for m in messages)
    assert decode_chunks(codec, split_at(stream, cuts)) == messages


@PROPERTY
@given(messages=st.lists(st.binary(max_size=300), max_size=20), cuts=cuts)
def test_length_prefixed_any_split_gives_the_same_frames(
    messages: list[bytes], cuts: list[int]
) -> None:
    codec = LengthPrefixedCodec(300)
    stream = b"".join(codec.encode(m) for m in messages)
    assert decode_chunks(codec, split_at(stream, cuts)) == messages


@PROPERTY
@given(data=st.binary(max_size=2000), cuts=cuts, size=st.integers(1, 100))
def test_raw_codec_preserves_the_concatenation(data: bytes, cuts: list[int], size: int) -> None:
    messages = decode_chunks(RawCodec(size), split_at(data, cuts))
    assert b"".join(messages) == data
    assert all(0 < len(m) <= size for m in messages)


@PROPERTY
@given(data=st.binary(max_size=3000), cuts=cuts, size=st.integers(1, 100))
def test_lecture_codec_preserves_the_concatenation(data: bytes, cuts: list[int], size: int) -> None:
    messages = decode_chunks(LectureCodec(size), split_at(data, cuts))
    assert b"".join(messages) == data
    assert all(0 < len(m) <= size for m in messages)


CODECS: dict[str, Callable[[], Codec]] = {
    "raw": lambda: RawCodec(16),
    "line": lambda: LineCodec(16),
    "line-crlf-strict": lambda: LineCodec(16, crlf=True, final_line_at_eof=False),
    "u32": lambda: LengthPrefixedCodec(16),
    "u32-default": LengthPrefixedCodec,
    "lecture": lambda: LectureCodec(16),
}


@pytest.mark.parametrize("name", sorted(CODECS))
@PROPERTY
@given(data=st.data())
def test_arbitrary_bytes_decode_or_raise_framing_errors_only(
    name: str, data: st.DataObject
) -> None:
    # Bytes biased towards the ones that matter to framing.
    alphabet = st.sampled_from([b"\n", b"\r", b"\x00", b"\xff", b"a", b"\x10"])
    raw = data.draw(
        st.one_of(st.binary(max_size=200), st.lists(alphabet, max_size=100).map(b"".join))
    )
    chunks = split_at(raw, data.draw(cuts))
    decoder = Decoder(CODECS[name]())
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            list(decoder)
        decoder.feed(b"")
        list(decoder)
    except (FramingError, IncompleteReadError):
        pass
    else:
        assert not decoder.buffer, "EOF must consume or refuse every byte"


def _feed_checking_bound(decoder: Decoder, chunks: list[bytes], limit: int) -> None:
    """Feed ``chunks``; after each one that does not raise, the buffer stays bounded."""
    for chunk in chunks:
        decoder.feed(chunk)
        list(decoder)
        assert len(decoder.buffer) <= limit + BUFFER_SLACK
    decoder.feed(b"")
    list(decoder)


@PROPERTY
@given(
    limit=st.integers(0, 64),
    excess=st.integers(1, 200),
    terminated=st.booleans(),
    data=st.data(),
)
def test_line_over_the_limit_raises_instead_of_growing_a_buffer(
    limit: int, excess: int, terminated: bool, data: st.DataObject
) -> None:
    body = data.draw(st.binary(min_size=limit + excess, max_size=limit + excess)).replace(
        b"\n", b"x"
    )
    stream = body + (b"\r\n" if terminated else b"")
    # Chunks of at most a few bytes, so the bound is checked all along.
    chunk_size = data.draw(st.integers(1, 3))
    chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    decoder = Decoder(LineCodec(limit))
    with pytest.raises(MessageTooLargeError) as info:
        _feed_checking_bound(decoder, chunks, limit)
    assert info.value.limit == limit
    assert len(decoder.buffer) <= limit + BUFFER_SLACK


@PROPERTY
@given(
    limit=st.integers(0, 64),
    claimed=st.integers(0, 0xFFFFFFFF),
    body=st.binary(max_size=200),
    data=st.data(),
)
def test_frame_over_the_limit_raises_from_its_header(
    limit: int, claimed: int, body: bytes, data: st.DataObject
) -> None:
    codec = LengthPrefixedCodec(limit)
    # At most the claimed body, so no second header follows.
    stream = claimed.to_bytes(4, "big") + body[:claimed]
    chunk_size = data.draw(st.integers(1, 8))
    chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    decoder = Decoder(codec)
    fed = 0
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            fed += len(chunk)
            list(decoder)
            assert len(decoder.buffer) <= limit + BUFFER_SLACK
    except MessageTooLargeError as exc:
        assert claimed > limit
        assert exc.size == claimed
        # Refused as soon as the header was complete, not after the body.
        assert fed - len(chunk) < 4 <= fed
    else:
        assert claimed <= limit
