"""Endpoint grammar, port checks and address formatting (``socketkit.address``).

Opens no socket and resolves no name.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketkit.address import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Endpoint,
    InetEndpoint,
    ResolvedAddress,
    UnixEndpoint,
    family_from_flags,
    format_sockaddr,
    parse_endpoint,
    parse_port,
)
from socketkit.errors import AddressError

PROPERTY = settings(max_examples=300, deadline=None)


def test_lecture_defaults() -> None:
    assert (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 8080)


# -- parse_endpoint: the grammar ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        # a bare port: the host is the caller's default
        ("8080", {}, InetEndpoint("127.0.0.1", 8080)),
        ("8080", {"default_host": None}, InetEndpoint(None, 8080)),
        ("0", {}, InetEndpoint("127.0.0.1", 0)),
        (" 8080 ", {}, InetEndpoint("127.0.0.1", 8080)),
        # host:port
        ("127.0.0.1:8080", {}, InetEndpoint("127.0.0.1", 8080)),
        ("localhost:80", {}, InetEndpoint("localhost", 80)),
        ("example.org:65535", {}, InetEndpoint("example.org", 65535)),
        ("*:8080", {}, InetEndpoint(None, 8080)),
        (":8080", {}, InetEndpoint("127.0.0.1", 8080)),
        (":8080", {"default_host": None}, InetEndpoint(None, 8080)),
        # a host alone, when a default port is given
        ("localhost", {"default_port": 8080}, InetEndpoint("localhost", 8080)),
        ("*", {"default_port": 8080}, InetEndpoint(None, 8080)),
        # [v6]:port
        ("[::1]:8080", {}, InetEndpoint("::1", 8080)),
        ("[::]:0", {}, InetEndpoint("::", 0)),
        ("[fe80::1%eth0]:22", {}, InetEndpoint("fe80::1%eth0", 22)),
        ("[::ffff:127.0.0.1]:80", {}, InetEndpoint("::ffff:127.0.0.1", 80)),
        ("[::1]", {"default_port": 7}, InetEndpoint("::1", 7)),
        # a bare v6 literal with a default port
        ("::1", {"default_port": 8080}, InetEndpoint("::1", 8080)),
        ("2001:db8::5", {"default_port": 53}, InetEndpoint("2001:db8::5", 53)),
        # Unix domain sockets
        ("unix:/tmp/sock", {}, UnixEndpoint("/tmp/sock")),
        ("unix:relative/sock", {}, UnixEndpoint("relative/sock")),
        ("unix:@abstract", {}, UnixEndpoint("@abstract")),
    ],
)
def test_parse_endpoint(text: str, kwargs: dict[str, object], expected: Endpoint) -> None:
    assert parse_endpoint(text, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("", {}, "invalid address '': empty"),
        ("   ", {}, "invalid address '': empty"),
        ("unix:", {}, "invalid address 'unix:': empty Unix socket path"),
        ("localhost", {}, "invalid address 'localhost': missing ':PORT'"),
        ("[::1]", {}, "invalid address '[::1]': missing ':PORT'"),
        ("[::1", {}, "invalid address '[::1': missing ']' after IPv6 address"),
        ("[::1]8080", {}, "invalid address '[::1]8080': expected ':PORT' after ']'"),
        ("[nope]:80", {}, "invalid address '[nope]:80': 'nope' is not an IPv6 address"),
        ("[::1%]:80", {}, "invalid address '[::1%]:80': '::1%' is not an IPv6 address"),
        ("[::1%a b]:80", {}, "invalid address '[::1%a b]:80': '::1%a b' is not an IPv6"),
        ("[::1%a/b]:80", {}, "invalid address '[::1%a/b]:80': '::1%a/b' is not an IPv6"),
        ("::1", {}, "invalid address '::1': write IPv6 with a port as [ADDR]:PORT"),
        # A zone holding "]" would format as "[::1%a]]:5", which reads back wrong.
        ("::1%a]", {"default_port": 5}, "invalid address '::1%a]': write IPv6 with a port"),
        ("::1:8080", {}, "invalid address '::1:8080': write IPv6 with a port as [ADDR]:PORT"),
        ("a:b:c", {"default_port": 1}, "invalid address 'a:b:c': write IPv6 with a port"),
        ("my host:80", {}, "invalid address 'my host:80': malformed host 'my host'"),
        ("a/b:80", {}, "invalid address 'a/b:80': malformed host 'a/b'"),
        ("host:", {}, "invalid port '': expected a number from 0 to 65535"),
        ("host:http", {}, "invalid port 'http': expected a number from 0 to 65535"),
        ("host:70000", {}, "invalid port 70000: must be from 0 to 65535"),
        ("70000", {}, "invalid port 70000: must be from 0 to 65535"),
        ("[::1]:99999", {}, "invalid port 99999: must be from 0 to 65535"),
    ],
)
def test_parse_endpoint_errors(text: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_endpoint(text, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert isinstance(info.value, ValueError)


# -- parse_port ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("80", 80), ("65535", 65535), (" 22 ", 22), (443, 443)]
)
def test_parse_port(text: str | int, value: int) -> None:
    assert parse_port(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("70000", "invalid port 70000: must be from 0 to 65535"),
        ("65536", "invalid port 65536: must be from 0 to 65535"),
        ("-1", "invalid port '-1': expected a number from 0 to 65535"),
        ("abc", "invalid port 'abc': expected a number from 0 to 65535"),
        ("", "invalid port '': expected a number from 0 to 65535"),
        # Full-width digits pass str.isdigit() but are no port number.
        ("\uff18\uff10", "invalid port '\uff18\uff10': expected a number from 0 to 65535"),
        ("8O", "invalid port '8O': expected a number from 0 to 65535"),
        ("+80", "invalid port '+80': expected a number from 0 to 65535"),
        (-1, "invalid port -1: must be from 0 to 65535"),
        (65536, "invalid port 65536: must be from 0 to 65535"),
    ],
)
def test_parse_port_errors(text: str | int, message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_port(text)
    assert str(info.value) == message


def test_parse_port_names_what_it_parses() -> None:
    with pytest.raises(AddressError, match=r"^invalid source port 'x': "):
        parse_port("x", what="source port")


# -- parse_endpoint under hypothesis -------------------------------------------

hosts = st.one_of(
    st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?\Z"),
    st.ip_addresses(v=4).map(str),
)
ports = st.integers(0, 65535)
v6 = st.ip_addresses(v=6).map(str)
valid_texts = st.one_of(
    ports.map(str),
    st.tuples(hosts, ports).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(v6, ports).map(lambda t: f"[{t[0]}]:{t[1]}"),
    ports.map(lambda p: f"*:{p}"),
    st.text(min_size=1).filter(lambda s: s.strip() == s).map(lambda p: f"unix:{p}"),
    st.text(min_size=1).filter(lambda s: s.strip() == s).map(lambda p: f"unix:@{p}"),
)
default_hosts = st.sampled_from([None, "127.0.0.1", "::1"])
default_ports = st.one_of(st.none(), ports)
# Text biased towards the grammar's special characters.
grammar_chars = st.sampled_from(list("[]:%*@/. 0189afunix\uff10\t"))
grammar_text = st.one_of(
    st.text(),
    st.text(alphabet=grammar_chars),
    # IPv6 literals with arbitrary zones, bracketed or not, with or without a port.
    st.tuples(v6, st.text(alphabet=grammar_chars, max_size=5), st.booleans(), ports).map(
        lambda t: f"[{t[0]}%{t[1]}]:{t[3]}" if t[2] else f"{t[0]}%{t[1]}"
    ),
)


@PROPERTY
@given(text=grammar_text, default_host=default_hosts, default_port=default_ports)
def test_any_text_parses_or_raises_address_error(
    text: str, default_host: str | None, default_port: int | None
) -> None:
    try:
        endpoint = parse_endpoint(text, default_host=default_host, default_port=default_port)
    except AddressError as exc:
        assert "\n" not in str(exc).replace(repr(text), "")
        return
    assert isinstance(endpoint, InetEndpoint | UnixEndpoint)
    if isinstance(endpoint, InetEndpoint):
        assert 0 <= endpoint.port <= 65535


@PROPERTY
@given(text=grammar_text, default_host=default_hosts, default_port=default_ports)
def test_formatting_a_parsed_endpoint_round_trips(
    text: str, default_host: str | None, default_port: int | None
) -> None:
    try:
        endpoint = parse_endpoint(text, default_host=default_host, default_port=default_port)
    except AddressError:
        return
    assert parse_endpoint(str(endpoint), default_host=default_host) == endpoint


@PROPERTY
@given(text=valid_texts, default_host=default_hosts)
def test_valid_endpoints_round_trip(text: str, default_host: str | None) -> None:
    endpoint = parse_endpoint(text, default_host=default_host)
    assert parse_endpoint(str(endpoint), default_host=default_host) == endpoint


@pytest.mark.parametrize(
    ("endpoint", "text"),
    [
        (InetEndpoint("127.0.0.1", 80), "127.0.0.1:80"),
        (InetEndpoint("::1", 80), "[::1]:80"),
        (InetEndpoint(None, 80), "*:80"),
        (UnixEndpoint("/tmp/s"), "unix:/tmp/s"),
        (UnixEndpoint("@name"), "unix:@name"),
    ],
)
def test_endpoint_str(endpoint: Endpoint, text: str) -> None:
    assert str(endpoint) == text


def test_unix_endpoint_sockaddr() -> None:
    assert UnixEndpoint("/tmp/s").sockaddr == "/tmp/s"
    assert UnixEndpoint("@name").sockaddr == "\0name"


def test_endpoints_are_frozen_and_slotted() -> None:
    endpoint = InetEndpoint("h", 1)
    with pytest.raises(AttributeError):
        endpoint.port = 2  # type: ignore[misc]
    assert not hasattr(endpoint, "__dict__")


# -- format_sockaddr ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sockaddr", "text"),
    [
        (("127.0.0.1", 8080), "127.0.0.1:8080"),
        (("0.0.0.0", 0), "0.0.0.0:0"),
        (("::1", 8080, 0, 0), "[::1]:8080"),
        (("fe80::1%eth0", 22, 0, 2), "[fe80::1%eth0]:22"),
        # IPv4-mapped (what a dual-stack listener sees) shows as IPv4.
        (("::ffff:127.0.0.1", 8080, 0, 0), "127.0.0.1:8080"),
        (("::ffff:10.1.2.3", 1, 0, 0), "10.1.2.3:1"),
        ("/tmp/sock", "unix:/tmp/sock"),
        (b"/tmp/sock", "unix:/tmp/sock"),
        ("\0abstract", "unix:@abstract"),
        (b"\0abstract", "unix:@abstract"),
        # An autobound Linux client: five hex digits in the abstract namespace.
        (b"\x0000a1f", "unix:@00a1f"),
        ("", "unix:(unnamed)"),
        (b"", "unix:(unnamed)"),
    ],
)
def test_format_sockaddr(sockaddr: object, text: str) -> None:
    assert format_sockaddr(sockaddr) == text


def test_resolved_address_str() -> None:
    addr = ResolvedAddress(socket.AF_INET6, socket.SOCK_STREAM, 6, ("::1", 80, 0, 0))
    assert str(addr) == "[::1]:80"


def test_family_from_flags() -> None:
    assert family_from_flags() == socket.AF_UNSPEC
    assert family_from_flags(ipv4=True) == socket.AF_INET
    assert family_from_flags(ipv6=True) == socket.AF_INET6
    with pytest.raises(AddressError, match=r"^IPv4 only and IPv6 only exclude each other"):
        family_from_flags(ipv4=True, ipv6=True)
