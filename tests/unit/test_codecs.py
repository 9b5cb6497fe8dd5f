"""Framing codecs, example by example: whole, byte by byte, with trailing bytes.

After h11's ``tests/test_io.py``: every example is decoded three ways (all at
once, one byte at a time, and followed by bytes of a next message that must
stay in the buffer), because a codec that only works when a message arrives
in one piece is the partial-read bug the lecture warns about.

Opens no socket.
"""

from __future__ import annotations

import pytest

from socketkit.errors import (
    FramingError,
    IncompleteReadError,
    MessageTooLargeError,
    SettingError,
    UsageError,
)
from socketkit.framing import (
    DEFAULT_MAX_CHUNK_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_LENGTH,
    Codec,
    Decoder,
    LectureCodec,
    LengthPrefixedCodec,
    LineCodec,
    RawCodec,
    ReceiveBuffer,
    codec_by_name,
)


def drain(decoder: Decoder) -> list[bytes]:
    return list(decoder)


def decode_whole(codec: Codec, data: bytes, *, eof: bool = True) -> list[bytes]:
    decoder = Decoder(codec)
    decoder.feed(data)
    messages = drain(decoder)
    if eof:
        decoder.feed(b"")
        messages += drain(decoder)
    return messages


def decode_bytewise(codec: Codec, data: bytes, *, eof: bool = True) -> list[bytes]:
    decoder = Decoder(codec)
    messages: list[bytes] = []
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        messages += drain(decoder)
    if eof:
        decoder.feed(b"")
        messages += drain(decoder)
    return messages


def check_codec(codec: Codec, data: bytes, expected: list[bytes], trailing: bytes) -> None:
    """``data`` decodes to ``expected`` whole and byte by byte, with EOF after it;
    followed by ``trailing`` (the start of a next message) and no EOF, the same
    messages come out and exactly ``trailing`` stays buffered."""
    assert decode_whole(codec, data) == expected
    assert decode_bytewise(codec, data) == expected
    for decode in (decode_whole, decode_bytewise):
        decoder = Decoder(codec)
        if decode is decode_whole:
            decoder.feed(data + trailing)
            messages = drain(decoder)
        else:
            messages = []
            for byte in data + trailing:
                decoder.feed(bytes([byte]))
                messages += drain(decoder)
        assert messages == expected
        assert decoder.buffer.peek() == trailing


# -- RawCodec ------------------------------------------------------------------


class TestRawCodec:
    def test_whole_read_is_one_message(self) -> None:
        assert decode_whole(RawCodec(), b"Hello from client") == [b"Hello from client"]

    def test_byte_by_byte_every_read_is_a_message(self) -> None:
        messages = decode_bytewise(RawCodec(), b"abc")
        assert messages == [b"a", b"b", b"c"]

    def test_trailing_bytes_are_handed_out_too(self) -> None:
        # Raw has no message boundary: whatever is buffered is the next message.
        decoder = Decoder(RawCodec())
        decoder.feed(b"abc")
        decoder.feed(b"def")
        assert drain(decoder) == [b"abcdef"]
        assert not decoder.buffer

    def test_reads_are_cut_at_max_chunk_size(self) -> None:
        assert decode_whole(RawCodec(4), b"0123456789") == [b"0123", b"4567", b"89"]

    def test_empty_stream_has_no_message(self) -> None:
        assert decode_whole(RawCodec(), b"") == []

    def test_encode_is_identity(self) -> None:
        assert RawCodec().encode(b"\x00\n\r") == b"\x00\n\r"
        assert RawCodec().encode(bytearray(b"ab")) == b"ab"  # type: ignore[arg-type]

    def test_settings(self) -> None:
        assert RawCodec().max_message_size == DEFAULT_MAX_CHUNK_SIZE == 64 * 1024
        with pytest.raises(ValueError, match="max_chunk_size"):
            RawCodec(0)


# -- LineCodec -----------------------------------------------------------------


class TestLineCodec:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"one\ntwo\n", [b"one", b"two"]),
            (b"one\r\ntwo\r\n", [b"one", b"two"]),
            (b"one\r\ntwo\n", [b"one", b"two"]),
            (b"\n\r\n", [b"", b""]),
            (b"a\rb\n", [b"a\rb"]),  # a lone CR is data, not an ending
            (b"a\r\r\n", [b"a\r"]),  # only the CR right before LF is part of the ending
            (b"\x00\xff\n", [b"\x00\xff"]),
        ],
    )
    def test_lines(self, data: bytes, expected: list[bytes]) -> None:
        check_codec(LineCodec(), data, expected, trailing=b"next line wit")

    def test_exactly_at_the_limit(self) -> None:
        check_codec(LineCodec(5), b"12345\n", [b"12345"], trailing=b"6789")
        check_codec(LineCodec(5), b"12345\r\n", [b"12345"], trailing=b"6789")

    def test_one_over_the_limit(self) -> None:
        for data in (b"123456\n", b"123456\r\n"):
            for decode in (decode_whole, decode_bytewise):
                with pytest.raises(MessageTooLargeError) as info:
                    decode(LineCodec(5), data)
                assert info.value.limit == 5
                # Whole, the line's length is known (6); byte by byte the
                # codec stops at the first byte that proves it too long.
                assert info.value.size in (6, 7)
                assert info.value.remote is True

    def test_cr_at_the_limit_boundary_waits_for_lf(self) -> None:
        # "12345\r" is 6 bytes with no newline yet: the CR may start a CRLF,
        # so the codec must not call the line too long until it knows.
        decoder = Decoder(LineCodec(5))
        decoder.feed(b"12345\r")
        assert drain(decoder) == []
        decoder.feed(b"\n")
        assert drain(decoder) == [b"12345"]

    def test_cr_at_the_limit_boundary_then_more_data_is_too_long(self) -> None:
        decoder = Decoder(LineCodec(5))
        decoder.feed(b"12345\r")
        assert drain(decoder) == []
        decoder.feed(b"x")
        with pytest.raises(MessageTooLargeError):
            drain(decoder)

    def test_too_long_is_raised_before_any_newline_arrives(self) -> None:
        # A peer that never sends a newline must not make us buffer for ever.
        decoder = Decoder(LineCodec(5))
        decoder.feed(b"1234567")
        with pytest.raises(MessageTooLargeError) as info:
            drain(decoder)
        assert "longer than 5 bytes" in str(info.value)
        assert len(decoder.buffer) <= 5 + 2

    def test_zero_length_limit_allows_empty_lines_only(self) -> None:
        check_codec(LineCodec(0), b"\n\r\n", [b"", b""], trailing=b"")
        with pytest.raises(MessageTooLargeError):
            decode_whole(LineCodec(0), b"a\n")

    def test_final_line_at_eof_is_a_message_by_default(self) -> None:
        assert decode_whole(LineCodec(), b"one\ntwo") == [b"one", b"two"]
        assert decode_bytewise(LineCodec(), b"one\ntwo") == [b"one", b"two"]
        assert decode_whole(LineCodec(), b"one\n") == [b"one"]

    def test_final_line_at_eof_still_obeys_the_limit(self) -> None:
        with pytest.raises(MessageTooLargeError):
            decode_whole(LineCodec(5), b"123456")
        assert decode_whole(LineCodec(5), b"12345") == [b"12345"]

    def test_final_line_at_eof_disabled_raises_incomplete(self) -> None:
        codec = LineCodec(final_line_at_eof=False)
        for data in (b"one\ntwo", b"one\ntwo\r"):
            decoder = Decoder(codec)
            decoder.feed(data)
            assert drain(decoder) == [b"one"]
            decoder.feed(b"")
            with pytest.raises(IncompleteReadError) as info:
                drain(decoder)
            assert info.value.partial == data[4:]
            assert "middle of a line" in str(info.value)
        assert decode_whole(codec, b"one\n") == [b"one"]

    def test_encode(self) -> None:
        assert LineCodec().encode(b"hello") == b"hello\n"
        assert LineCodec(crlf=True).encode(b"hello") == b"hello\r\n"
        assert LineCodec(5).encode(b"12345") == b"12345\n"

    def test_encode_rejects_a_newline_inside(self) -> None:
        with pytest.raises(FramingError) as info:
            LineCodec().encode(b"a\nb")
        assert info.value.remote is False

    def test_encode_rejects_too_long(self) -> None:
        with pytest.raises(MessageTooLargeError) as info:
            LineCodec(5).encode(b"123456")
        assert info.value.remote is False
        assert (info.value.size, info.value.limit) == (6, 5)

    def test_crlf_encoding_round_trips_a_trailing_cr(self) -> None:
        codec = LineCodec(crlf=True)
        assert decode_whole(codec, codec.encode(b"a\r")) == [b"a\r"]

    def test_lf_encoding_of_a_trailing_cr_is_ambiguous(self) -> None:
        # Known limitation of LF framing with CRLF-tolerant reading: "a\r"
        # goes out as "a\r\n", which any CRLF-tolerant reader takes as "a".
        codec = LineCodec()
        assert decode_whole(codec, codec.encode(b"a\r")) == [b"a"]

    def test_settings(self) -> None:
        assert LineCodec().max_message_size == DEFAULT_MAX_LINE_LENGTH == 64 * 1024
        with pytest.raises(ValueError, match="max_line_length"):
            LineCodec(-1)


# -- LengthPrefixedCodec -------------------------------------------------------


class TestLengthPrefixedCodec:
    def test_header_is_u32_network_byte_order(self) -> None:
        codec = LengthPrefixedCodec()
        assert codec.encode(b"abc") == b"\x00\x00\x00\x03abc"
        assert codec.encode(b"") == b"\x00\x00\x00\x00"
        assert codec.encode(b"x" * 258)[:4] == b"\x00\x00\x01\x02"
        assert codec.encode(b"x" * 0x010203)[:4] == b"\x00\x01\x02\x03"

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"\x00\x00\x00\x03abc", [b"abc"]),
            (b"\x00\x00\x00\x00", [b""]),
            (b"\x00\x00\x00\x01\n\x00\x00\x00\x02\r\n", [b"\n", b"\r\n"]),
            (b"\x00\x00\x01\x00" + bytes(range(256)), [bytes(range(256))]),
        ],
    )
    def test_frames(self, data: bytes, expected: list[bytes]) -> None:
        check_codec(LengthPrefixedCodec(), data, expected, trailing=b"\x00\x00\x00\x05ab")

    def test_trailing_partial_header_stays_buffered(self) -> None:
        check_codec(LengthPrefixedCodec(), b"\x00\x00\x00\x01z", [b"z"], trailing=b"\x00\x00")

    def test_exactly_at_the_limit(self) -> None:
        check_codec(LengthPrefixedCodec(3), b"\x00\x00\x00\x03abc", [b"abc"], trailing=b"\x00")

    def test_one_over_the_limit_is_refused_from_the_header(self) -> None:
        decoder = Decoder(LengthPrefixedCodec(3))
        decoder.feed(b"\x00\x00\x00\x04")
        with pytest.raises(MessageTooLargeError) as info:
            drain(decoder)
        assert (info.value.size, info.value.limit, info.value.remote) == (4, 3, True)

    def test_huge_header_raises_with_only_four_bytes_fed(self) -> None:
        # A header claiming ~4 GiB must be refused at once, not after
        # buffering (or allocating) anything like that.
        decoder = Decoder(LengthPrefixedCodec())
        decoder.feed(b"\xff\xff\xff")
        assert drain(decoder) == []
        decoder.feed(b"\xff")
        with pytest.raises(MessageTooLargeError) as info:
            drain(decoder)
        assert info.value.size == 0xFFFFFFFF
        assert info.value.limit == DEFAULT_MAX_FRAME_SIZE
        assert "4294967295" in str(info.value)
        assert len(decoder.buffer) == 4

    def test_truncated_body_at_eof(self) -> None:
        decoder = Decoder(LengthPrefixedCodec())
        decoder.feed(b"\x00\x00\x00\x0aabc")
        assert drain(decoder) == []
        decoder.feed(b"")
        with pytest.raises(IncompleteReadError) as info:
            drain(decoder)
        assert info.value.partial == b"\x00\x00\x00\x0aabc"
        assert info.value.expected == 14
        assert "7 of 14 bytes" in str(info.value)

    def test_truncated_header_at_eof(self) -> None:
        decoder = Decoder(LengthPrefixedCodec())
        decoder.feed(b"\x00\x00")
        decoder.feed(b"")
        with pytest.raises(IncompleteReadError) as info:
            drain(decoder)
        assert info.value.partial == b"\x00\x00"
        assert info.value.expected is None

    def test_clean_eof_between_frames(self) -> None:
        assert decode_whole(LengthPrefixedCodec(), b"") == []

    def test_encode_refuses_over_the_limit(self) -> None:
        with pytest.raises(MessageTooLargeError) as info:
            LengthPrefixedCodec(3).encode(b"abcd")
        assert info.value.remote is False

    def test_settings(self) -> None:
        assert LengthPrefixedCodec.header_size == 4
        assert LengthPrefixedCodec().max_message_size == DEFAULT_MAX_FRAME_SIZE == 16 * 2**20
        LengthPrefixedCodec(0xFFFFFFFF)
        with pytest.raises(ValueError, match="max_frame_size"):
            LengthPrefixedCodec(2**32)
        with pytest.raises(ValueError, match="max_frame_size"):
            LengthPrefixedCodec(-1)


# -- LectureCodec --------------------------------------------------------------


class TestLectureCodec:
    def test_c_client_message_without_newline(self) -> None:
        assert decode_whole(LectureCodec(), b"Hello from client") == [b"Hello from client"]

    def test_java_client_line_keeps_its_ending(self) -> None:
        assert decode_whole(LectureCodec(), b"Hello from client\n") == [b"Hello from client\n"]
        assert decode_whole(LectureCodec(), b"Hello\r\n") == [b"Hello\r\n"]

    def test_a_line_then_what_follows(self) -> None:
        assert decode_whole(LectureCodec(), b"one\ntwo") == [b"one\n", b"two"]

    def test_read_boundaries_matter_by_design(self) -> None:
        assert decode_bytewise(LectureCodec(), b"ab\n") == [b"a", b"b", b"\n"]

    def test_at_most_max_size_per_message(self) -> None:
        data = b"x" * 2500
        assert decode_whole(LectureCodec(), data) == [b"x" * 1023, b"x" * 1023, b"x" * 454]
        # A newline past the limit does not stretch the message.
        assert decode_whole(LectureCodec(4), b"abcdef\n") == [b"abcd", b"ef\n"]
        # A newline at the last allowed position ends the message.
        assert decode_whole(LectureCodec(4), b"abc\nd") == [b"abc\n", b"d"]

    def test_encode_is_identity(self) -> None:
        assert LectureCodec().encode(b"Hello from server") == b"Hello from server"

    def test_settings(self) -> None:
        assert LectureCodec().max_message_size == 1023
        with pytest.raises(ValueError, match="max_size"):
            LectureCodec(0)


# -- Decoder and ReceiveBuffer -------------------------------------------------


class TestDecoder:
    def test_feed_after_eof_is_a_local_error(self) -> None:
        decoder = Decoder(LineCodec())
        decoder.feed(b"")
        assert decoder.at_eof
        decoder.feed(b"")  # a second EOF is harmless
        with pytest.raises(FramingError) as info:
            decoder.feed(b"late")
        assert info.value.remote is False

    def test_maybe_message_is_none_until_complete(self) -> None:
        decoder = Decoder(LineCodec())
        assert decoder.maybe_message() is None
        decoder.feed(b"ab")
        assert decoder.maybe_message() is None
        decoder.feed(b"\n")
        assert decoder.maybe_message() == b"ab"
        assert decoder.maybe_message() is None


class TestReceiveBuffer:
    def test_extract_and_peek(self) -> None:
        buf = ReceiveBuffer()
        assert not buf
        buf.feed(b"hello")
        buf.feed(memoryview(b" world"))
        assert len(buf) == 11
        assert buf.peek(5) == b"hello"
        assert buf.extract(6) == b"hello "
        assert buf.maybe_extract_exactly(6) is None
        assert buf.maybe_extract_exactly(5) == b"world"
        assert buf.extract(10) == b""

    def test_find_newline_remembers_how_far_it_looked(self) -> None:
        buf = ReceiveBuffer()
        buf.feed(b"abc")
        assert buf.find_newline() == -1
        buf.feed(b"d\nef\n")
        assert buf.find_newline() == 4
        assert buf.extract(5) == b"abcd\n"
        assert buf.find_newline() == 2
        buf.extract(1)
        assert buf.find_newline() == 1
        assert buf.extract_all() == b"f\n"
        assert buf.find_newline() == -1


@pytest.mark.parametrize(
    ("name", "cls", "size"),
    [
        ("raw", RawCodec, DEFAULT_MAX_CHUNK_SIZE),
        ("line", LineCodec, DEFAULT_MAX_LINE_LENGTH),
        ("u32", LengthPrefixedCodec, DEFAULT_MAX_FRAME_SIZE),
        ("lecture", LectureCodec, 1023),
    ],
)
def test_codec_by_name(name: str, cls: type, size: int) -> None:
    codec = codec_by_name(name)
    assert isinstance(codec, cls)
    assert codec.max_message_size == size
    assert codec_by_name(name, 77).max_message_size == 77


def test_codec_by_name_unknown() -> None:
    with pytest.raises(SettingError, match="unknown framing 'json'") as info:
        codec_by_name("json")
    assert info.value.exit_code == 2  # what the command line exits with, as before
    assert isinstance(info.value, ValueError)
    assert not isinstance(info.value, UsageError)
