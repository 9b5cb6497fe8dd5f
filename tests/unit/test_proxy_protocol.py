"""PROXY protocol headers, v1 and v2: whole, byte by byte, and malformed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketkit.errors import FramingError
from socketkit.framing import ReceiveBuffer
from socketkit.framing.proxy import (
    V2_SIGNATURE,
    ProxyHeader,
    encode_v1,
    encode_v2,
    maybe_parse_proxy_header,
)

SRC4, DST4 = ("192.0.2.7", 51234), ("198.51.100.1", 8080)
SRC6, DST6 = ("2001:db8::7", 40000), ("2001:db8::1", 443)


def _parse(data: bytes) -> tuple[ProxyHeader | None, bytes]:
    buffer = ReceiveBuffer()
    buffer.feed(data)
    header = maybe_parse_proxy_header(buffer)
    return header, buffer.extract_all()


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
@pytest.mark.parametrize(("src", "dst"), [(SRC4, DST4), (SRC6, DST6)])
def test_round_trip_leaves_application_bytes(encode, src, dst) -> None:  # type: ignore[no-untyped-def]
    header, rest = _parse(encode(src, dst) + b"Hello from client")
    assert header is not None
    assert (header.source, header.destination, header.local) == (src, dst, False)
    assert rest == b"Hello from client"


def test_v1_exact_text() -> None:
    assert encode_v1(SRC4, DST4) == b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 8080\r\n"


def test_v2_exact_bytes() -> None:
    data = encode_v2(SRC4, DST4)
    assert data[:12] == V2_SIGNATURE
    assert data[12:16] == b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 bytes
    assert data[16:] == bytes([192, 0, 2, 7, 198, 51, 100, 1]) + b"\xc8\x22\x1f\x90"


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
def test_byte_by_byte(encode) -> None:  # type: ignore[no-untyped-def]
    data = encode(SRC6, DST6) + b"x"
    buffer = ReceiveBuffer()
    for i, byte in enumerate(data[:-1]):
        buffer.feed(bytes([byte]))
        header = maybe_parse_proxy_header(buffer)
        assert (header is None) == (i < len(data) - 2)
    buffer.feed(b"x")
    assert buffer.extract_all() == b"x"


def test_unknown_and_local_are_health_checks() -> None:
    header, _ = _parse(b"PROXY UNKNOWN\r\n")
    assert header == ProxyHeader(1, True, None, None)
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    header, _ = _parse(local)
    assert header == ProxyHeader(2, True, None, None)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n",
        b"Hello from client",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # LF only
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"9" * 200,
        V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,  # version 3
        V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,  # too short for IPv4
    ],
)
def test_malformed_is_framing_error(data: bytes) -> None:
    with pytest.raises(FramingError, match="bad PROXY protocol header"):
        _parse(data)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_parse_wait_or_raise_framing_error(data: bytes, step: int) -> None:
    buffer = ReceiveBuffer()
    try:
        for i in range(0, len(data), step):
            buffer.feed(data[i : i + step])
            if maybe_parse_proxy_header(buffer) is not None:
                break
    except FramingError:
        pass
    assert len(buffer) <= len(data)
