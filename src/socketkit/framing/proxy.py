"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans-I/O.

A load balancer in front of a server opens its own connection to the server,
so the server's ``getpeername`` shows the balancer. With the PROXY protocol
the balancer first sends one header naming the real client; the server reads
it before anything else and from then on treats the header's source as the
peer. Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

- v1 is one text line: ``PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\\r\\n``, at
  most 107 bytes, or ``PROXY UNKNOWN ...\\r\\n``.
- v2 is binary: a 12-byte signature, a version/command byte, a
  family/transport byte, a 16-bit big-endian length, then the addresses
  (and optional TLVs, which are skipped).

``maybe_parse_proxy_header`` consumes the header from a ``ReceiveBuffer`` and
leaves the application's bytes behind it untouched. Anything that is not a
valid header is a ``FramingError``: a server configured for the PROXY
protocol must not accept connections without it (the spec says so, since
otherwise any client could claim any address).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..errors import FramingError
from ._buffer import ReceiveBuffer

__all__ = ["V2_SIGNATURE", "ProxyHeader", "encode_v1", "encode_v2", "maybe_parse_proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MAX = 107  # the spec's longest v1 line, CRLF included
_V2_HEADER = struct.Struct("!12sBBH")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the balancer said about the connection.

    Attributes:
        version: 1 or 2.
        local: True for a v2 LOCAL command or v1 UNKNOWN (a health check:
            use the real peer address).
        source: the client's (host, port), or None when not given.
        destination: the address the client connected to, or None.
    """

    version: int
    local: bool
    source: tuple[str, int] | None
    destination: tuple[str, int] | None


def _error(text: str) -> FramingError:
    return FramingError(f"bad PROXY protocol header: {text}")


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise _error(f"bad port {text!r}")
    return int(text)


def _parse_v1(line: bytes) -> ProxyHeader:
    parts = line[:-2].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(1, True, None, None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise _error(f"malformed v1 line {line[:60]!r}")
    version = 4 if parts[1] == b"TCP4" else 6
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        dst = ipaddress.ip_address(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise _error(f"bad address in {line[:60]!r}") from None
    if src.version != version or dst.version != version:
        raise _error(f"address family does not match {parts[1].decode()}")
    return ProxyHeader(1, False, (str(src), _port(parts[4])), (str(dst), _port(parts[5])))


def _parse_v2(command: int, family: int, body: bytes) -> ProxyHeader:
    if command >> 4 != 2:
        raise _error(f"unsupported v2 version {command >> 4}")
    cmd = command & 0x0F
    if cmd == 0:  # LOCAL: a health check from the balancer itself
        return ProxyHeader(2, True, None, None)
    if cmd != 1:
        raise _error(f"unknown v2 command {cmd}")
    fam = family >> 4
    if fam == 1 and len(body) >= 12:
        src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        return ProxyHeader(
            2,
            False,
            (str(ipaddress.IPv4Address(src)), sport),
            (str(ipaddress.IPv4Address(dst)), dport),
        )
    if fam == 2 and len(body) >= 36:
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return ProxyHeader(
            2,
            False,
            (str(ipaddress.IPv6Address(src)), sport),
            (str(ipaddress.IPv6Address(dst)), dport),
        )
    if fam in (0, 3):  # UNSPEC or AF_UNIX: no IP address to report
        return ProxyHeader(2, True, None, None)
    raise _error(f"v2 address block too short for family {fam}")


def maybe_parse_proxy_header(buffer: ReceiveBuffer) -> ProxyHeader | None:
    """Consume a PROXY header from ``buffer``; None until all of it has arrived.

    Raises:
        FramingError: the bytes are not a PROXY header (v1 or v2).
    """
    head = buffer.peek(16)
    if not head:
        return None
    sig_len = min(len(head), 12)
    if head[:sig_len] == V2_SIGNATURE[:sig_len]:
        if len(head) < 16:
            return None
        _sig, command, family, length = _V2_HEADER.unpack(head)
        if len(buffer) < 16 + length:
            return None
        raw = buffer.extract(16 + length)
        return _parse_v2(command, family, raw[16:])
    prefix_len = min(len(head), len(_V1_PREFIX))
    if head[:prefix_len] != _V1_PREFIX[:prefix_len]:
        raise _error("the connection did not start with one (is the balancer set to send it?)")
    index = buffer.find_newline()
    if index < 0:
        if len(buffer) >= _V1_MAX:
            raise _error(f"v1 line longer than {_V1_MAX} bytes")
        return None
    if index + 1 > _V1_MAX:
        raise _error(f"v1 line longer than {_V1_MAX} bytes")
    line = buffer.extract(index + 1)
    if not line.endswith(b"\r\n"):
        raise _error("v1 line must end with CRLF")
    return _parse_v1(line)


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header (for tests and for a relay that fronts a server)."""
    fam = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {fam} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def encode_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v2 PROXY header over TCP with no TLVs."""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version == 4:
        body = struct.pack("!4s4sHH", src.packed, dst.packed, source[1], destination[1])
        family = 0x11
    else:
        body = struct.pack("!16s16sHH", src.packed, dst.packed, source[1], destination[1])
        family = 0x21
    return _V2_HEADER.pack(V2_SIGNATURE, 0x21, family, len(body)) + body
