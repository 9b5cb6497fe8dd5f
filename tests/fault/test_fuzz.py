"""Check 10: the codecs, the address parser and the relay grammar against hostile input.

tests/unit has the well-formed properties (any split of valid messages gives
the same messages). These are the fault-oriented ones: arbitrary bytes cut
at arbitrary places, as a hostile or broken peer sends them, and arbitrary
text where users type addresses. Each input either works or raises one of
the documented errors, the buffer never holds more than one maximum
message (plus a header) without an error, and the outcome does not depend
on how the bytes were split (except for the raw and lecture codecs, which
are defined per read).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socketkit._sockets import listen_backlog
from socketkit.access import AccessList
from socketkit.address import format_sockaddr, parse_endpoint, parse_port
from socketkit.errors import (
    AddressError,
    FramingError,
    IncompleteReadError,
    SettingError,
    UsageError,
)
from socketkit.framing import (
    Codec,
    LectureCodec,
    LengthPrefixedCodec,
    LineCodec,
    RawCodec,
    ReceiveBuffer,
    codec_by_name,
)
from socketkit.framing.proxy import maybe_parse_proxy_header
from socketkit.relay import parse_relay_address
from socketkit.server._log import show_message

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: What a codec may raise on what a peer sent: the framing errors, or an
#: incomplete message at end of stream. Anything else is a bug.
DOCUMENTED = (FramingError, IncompleteReadError)

LIMIT = 64

CODECS: dict[str, Callable[[], Codec]] = {
    "line": lambda: LineCodec(LIMIT),
    "line-strict": lambda: LineCodec(LIMIT, final_line_at_eof=False),
    "u32": lambda: LengthPrefixedCodec(LIMIT),
    "raw": lambda: RawCodec(LIMIT),
    "lecture": lambda: LectureCodec(LIMIT),
}
#: How many bytes beyond one maximum message a codec may hold without raising.
SLACK = {"line": 1, "line-strict": 1, "u32": 4, "raw": 0, "lecture": 0}

# Bytes biased towards the ones framing cares about.
hostile = st.lists(
    st.one_of(
        st.binary(max_size=40),
        # Runs without a newline around the limit: the lines a codec must refuse.
        st.integers(LIMIT - 2, 3 * LIMIT).map(lambda n: b"A" * n),
        st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x05"]),
    ),
    max_size=30,
).map(b"".join)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _decode(name: str, chunks: list[bytes]) -> tuple[list[bytes], str | None]:
    """Feed chunks as a peer's reads, then end of stream; messages and the error kind."""
    codec = CODECS[name]()
    buffer = ReceiveBuffer()
    messages: list[bytes] = []
    try:
        for chunk in chunks:
            buffer.feed(chunk)
            while (message := codec.maybe_decode(buffer)) is not None:
                assert len(message) <= codec.max_message_size
                messages.append(message)
            assert len(buffer) <= codec.max_message_size + SLACK[name], "unbounded buffering"
        while (message := codec.decode_eof(buffer)) is not None:
            messages.append(message)
            if not buffer:
                break
    except DOCUMENTED as exc:
        return messages, type(exc).__name__
    return messages, None


@FUZZ
@given(name=st.sampled_from(sorted(CODECS)), data=hostile, cuts=st.lists(st.integers(0, 2000)))
def test_arbitrary_bytes_any_split_only_documented_errors(
    name: str, data: bytes, cuts: list[int]
) -> None:
    messages, _ = _decode(name, _chunks(data, cuts))
    if name in ("raw", "lecture"):
        assert b"".join(messages) == data[: len(b"".join(messages))]


@FUZZ
@given(
    name=st.sampled_from(["line", "line-strict", "u32"]),
    data=hostile,
    cuts_a=st.lists(st.integers(0, 2000)),
    cuts_b=st.lists(st.integers(0, 2000)),
)
def test_outcome_does_not_depend_on_the_split(
    name: str, data: bytes, cuts_a: list[int], cuts_b: list[int]
) -> None:
    whole = _decode(name, [data] if data else [])
    assert _decode(name, _chunks(data, cuts_a)) == whole
    assert _decode(name, _chunks(data, cuts_b)) == whole


@FUZZ
@given(data=hostile, cuts=st.lists(st.integers(0, 2000)))
def test_proxy_header_parser_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    buffer = ReceiveBuffer()
    for chunk in _chunks(data, cuts):
        buffer.feed(chunk)
        try:
            if maybe_parse_proxy_header(buffer) is not None:
                return
        except FramingError:
            return
        assert len(buffer) <= 16 + 65535 + 1


@FUZZ
@given(message=st.binary(max_size=200))
def test_show_message_prints_any_bytes(message: bytes) -> None:
    assert "\n" not in show_message(message.replace(b"\n", b""))


@FUZZ
@given(
    name=st.one_of(st.sampled_from(["raw", "line", "u32", "lecture"]), st.text(max_size=10)),
    size=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
)
def test_codec_by_name_takes_any_setting_or_says_why(name: str, size: int | None) -> None:
    with contextlib.suppress(SettingError):
        codec_by_name(name, size)


address_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        "".join,
        st.lists(
            st.sampled_from(
                [
                    "[",
                    "]",
                    ":",
                    "%",
                    "::1",
                    "127.0.0.1",
                    "*",
                    "localhost",
                    "65535",
                    "65536",
                    "0",
                    "-1",
                    "unix:",
                    "/tmp/s",
                    "@abstract",
                    " ",
                    "\x00",
                    "fe80::1%lo",
                    "1e3",
                    "٣",
                ]
            ),
            max_size=8,
        ),
    ),
)


@FUZZ
@given(text=address_text, default_port=st.one_of(st.none(), st.integers(0, 65535)))
def test_endpoint_parser_parses_or_raises_address_error(
    text: str, default_port: int | None
) -> None:
    try:
        endpoint = parse_endpoint(text, default_port=default_port)
    except AddressError as exc:
        assert "\n" not in str(exc)
        return
    assert str(endpoint)


@FUZZ
@given(text=st.one_of(st.text(max_size=20), st.integers(-(2**70), 2**70)))
def test_port_parser_parses_or_raises_address_error(text: str | int) -> None:
    try:
        port = parse_port(text)
    except AddressError:
        return
    assert 0 <= port <= 65535


@FUZZ
@given(sockaddr=st.one_of(st.none(), st.text(), st.binary(), st.tuples(st.text(), st.integers())))
def test_format_sockaddr_formats_anything(sockaddr: object) -> None:
    assert isinstance(format_sockaddr(sockaddr), str)


relay_text = st.builds(
    lambda kind, rest, opts: kind + rest + "".join("," + o for o in opts),
    st.sampled_from(
        [
            "tcp:",
            "tcp-listen:",
            "udp:",
            "udp-listen:",
            "unix:",
            "unix-listen:",
            "tls:",
            "tls-listen:",
            "stdio",
            "exec:",
            "",
            "TCP:",
            "tcp6:",
        ]
    ),
    st.one_of(st.text(max_size=30), address_text),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "fork",
                    "4",
                    "6",
                    "backlog=",
                    "backlog=-1",
                    "backlog=99999999999999",
                    "verify=2",
                    "alpn=",
                    "cert=",
                    "sni=\x00",
                    "=",
                    ",",
                    "self-signed",
                ]
            ),
            st.text(max_size=10),
        ),
        max_size=4,
    ),
)


@FUZZ
@given(text=relay_text)
def test_relay_grammar_parses_or_raises_one_line_address_error(text: str) -> None:
    try:
        parse_relay_address(text)
    except (AddressError, UsageError) as exc:
        assert str(exc)
        assert "\n" not in str(exc)


@FUZZ
@given(allow=st.lists(address_text, max_size=3), deny=st.lists(address_text, max_size=3))
def test_access_list_parses_or_raises_address_error(allow: list[str], deny: list[str]) -> None:
    try:
        acl = AccessList.from_strings(allow, deny)
    except AddressError:
        return
    acl.check(("127.0.0.1", 1))
    acl.check(("::1", 1, 0, 0))
    acl.check(None)


@FUZZ
@given(requested=st.one_of(st.none(), st.integers(-(2**70), 2**70)))
def test_any_backlog_setting_is_one_listen_accepts(requested: int | None) -> None:
    backlog = listen_backlog(requested)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)  # no OverflowError, whatever --backlog or backlog= said
