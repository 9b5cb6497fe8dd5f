"""The relay address grammar, access lists, hex dump and --crlf: sans-I/O, no sockets."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketkit.access import AccessList
from socketkit.address import InetEndpoint, UnixEndpoint
from socketkit.errors import AddressError, UsageError
from socketkit.relay import CrlfEncoder, HexDumper, parse_relay_address


@pytest.mark.parametrize(
    ("text", "kind", "endpoint"),
    [
        ("tcp:127.0.0.1:80", "tcp", InetEndpoint("127.0.0.1", 80)),
        ("TCP:example.com:443", "tcp", InetEndpoint("example.com", 443)),
        ("tcp:[::1]:8080", "tcp", InetEndpoint("::1", 8080)),
        ("tcp-listen:8080", "tcp-listen", InetEndpoint(None, 8080)),
        ("tcp-listen:127.0.0.1:0", "tcp-listen", InetEndpoint("127.0.0.1", 0)),
        ("udp:10.0.0.1:53", "udp", InetEndpoint("10.0.0.1", 53)),
        ("udp-listen:5353", "udp-listen", InetEndpoint(None, 5353)),
        ("unix:/tmp/s", "unix", UnixEndpoint("/tmp/s")),
        ("unix-listen:@abstract", "unix-listen", UnixEndpoint("@abstract")),
        ("tls:localhost:4433", "tls", InetEndpoint("localhost", 4433)),
        ("tls-listen:4433", "tls-listen", InetEndpoint(None, 4433)),
        ("stdio", "stdio", None),
        ("-", "stdio", None),
    ],
)
def test_kinds(text: str, kind: str, endpoint: object) -> None:
    addr = parse_relay_address(text)
    assert addr.kind == kind
    assert addr.endpoint == endpoint


def test_options() -> None:
    addr = parse_relay_address("tcp-listen:8080,fork,reuseaddr,backlog=50")
    assert addr.fork
    assert addr.listener
    assert addr.get("backlog") == "50"
    tls = parse_relay_address("tls:h:443,cafile=ca.pem,verify=0,sni=x,alpn=h2:http/1.1")
    assert tls.get("cafile") == "ca.pem"
    assert tls.get("verify") == "0"
    assert not tls.fork
    assert not tls.listener


def test_exec_takes_the_rest_verbatim() -> None:
    addr = parse_relay_address("exec:sh -c 'echo a,b'")
    assert addr.kind == "exec"
    assert addr.argv == ("sh", "-c", "echo a,b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("ftp:host:21", "unknown kind"),
        ("tcp:host", "missing ':PORT'"),
        ("tcp:host:70000", "65535"),
        ("tcp-listen:", "needs"),
        ("tcp:h:1,fork", "listeners only"),
        ("tcp:h:1,cafile=x", "tls"),
        ("tcp-listen:1,bogus", "unknown option"),
        ("tls:h:1,verify=2", "verify must be 0 or 1"),
        ("tcp-listen:1,4,6", "at most one"),
        ("exec:", "needs a command"),
        ("stdio:x", "no argument"),
    ],
)
def test_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_relay_address(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    with contextlib.suppress(AddressError, UsageError):
        parse_relay_address(text)


@given(st.sampled_from(["tcp:", "tcp-listen:", "tls:", "udp-listen:", "unix:"]), st.text())
def test_arbitrary_arguments_parse_or_raise(kind: str, rest: str) -> None:
    with contextlib.suppress(AddressError, UsageError):
        parse_relay_address(kind + rest)


# ------------------------------------------------------------------- access


def test_access_allow_and_deny() -> None:
    acl = AccessList.from_strings(allow=["127.0.0.0/8", "::1"], deny=["127.0.0.2"])
    assert acl.check(("127.0.0.1", 5000)) is None
    assert acl.check(("::1", 5000, 0, 0)) is None
    assert acl.check(("::ffff:127.0.0.1", 5000, 0, 0)) is None  # dual-stack listener
    assert "deny" in (acl.check(("127.0.0.2", 1)) or "")
    assert "allow" in (acl.check(("10.0.0.1", 1)) or "")
    assert acl.check("/tmp/unix-peer") is None  # Unix peers have no IP


def test_access_empty_lets_everyone_in() -> None:
    assert AccessList().check(("203.0.113.9", 1)) is None
    assert not AccessList().active


def test_access_deny_only() -> None:
    acl = AccessList.from_strings(deny=["10.0.0.0/8"])
    assert acl.check(("10.1.2.3", 1)) is not None
    assert acl.check(("192.0.2.1", 1)) is None


def test_access_bad_range() -> None:
    with pytest.raises(AddressError, match="CIDR"):
        AccessList.from_strings(allow=["10.0.0.0/33"])


@given(st.ip_addresses())
def test_access_matches_ipaddress(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    net = "10.0.0.0/8" if ip.version == 4 else "fd00::/8"
    acl = AccessList.from_strings(allow=[net])
    inside = ip in ipaddress.ip_network(net)
    assert (acl.check((str(ip), 1)) is None) == inside


# ------------------------------------------------------------------- hex dump, crlf


def test_hexdump_layout_and_offsets() -> None:
    d = HexDumper()
    text = d.feed(">", b"Hello, world!\n\x00\xff\x10")
    lines = text.splitlines()
    assert (
        lines[0]
        == "> 00000000  48 65 6c 6c 6f 2c 20 77  6f 72 6c 64 21 0a 00 ff  |Hello, world!...|"
    )
    assert lines[1].startswith("> 00000010  10 ")
    assert lines[1].endswith("|.|")
    assert d.feed(">", b"x").startswith("> 00000011  78")
    assert d.feed("<", b"y").startswith("< 00000000  79")
    assert d.feed(">", b"") == ""


@given(st.binary(max_size=200))
def test_hexdump_round_trips(data: bytes) -> None:
    text = HexDumper().feed("<", data)
    back = bytes.fromhex("".join(line[12:61] for line in text.splitlines()))
    assert back == data


def test_crlf() -> None:
    enc = CrlfEncoder()
    assert enc.feed(b"a\nb\r\nc") == b"a\r\nb\r\nc"
    assert enc.feed(b"\r") == b"\r"
    assert enc.feed(b"\nx\n") == b"\nx\r\n"  # CR LF split across chunks stays one CR LF


@given(st.lists(st.lists(st.sampled_from(b"ab\r\n"), max_size=20).map(bytes)))
def test_crlf_any_split_same_result(chunks: list[bytes]) -> None:
    whole = CrlfEncoder().feed(b"".join(chunks))
    enc = CrlfEncoder()
    assert b"".join(enc.feed(c) for c in chunks) == whole
