"""socat's address and option names in the relay grammar (no sockets)."""

from __future__ import annotations

import pytest

from socketkit.address import InetEndpoint, UnixEndpoint
from socketkit.errors import AddressError
from socketkit.relay import parse_relay_address


@pytest.mark.parametrize(
    ("socat", "ours"),
    [
        ("TCP4-LISTEN:8000,fork,reuseaddr", "tcp-listen:8000,4,fork,reuseaddr"),
        ("tcp6-listen:8000", "tcp-listen:8000,6"),
        ("TCP-L:8000", "tcp-listen:8000"),
        ("TCP4:127.0.0.1:80", "tcp:127.0.0.1:80,4"),
        ("TCP6:[::1]:80", "tcp:[::1]:80,6"),
        ("TCP-CONNECT:example.org:80", "tcp:example.org:80"),
        ("UDP4:127.0.0.1:53", "udp:127.0.0.1:53,4"),
        ("UDP-LISTEN:5353", "udp-listen:5353"),
        ("UDP6-LISTEN:5353", "udp-listen:5353,6"),
        ("UNIX-CONNECT:/tmp/s", "unix:/tmp/s"),
        ("UNIX-LISTEN:/tmp/s,fork", "unix-listen:/tmp/s,fork"),
        ("OPENSSL:host:443,verify=0", "tls:host:443,verify=0"),
        ("openssl-connect:host:443,snihost=name", "tls:host:443,sni=name"),
        ("OPENSSL-LISTEN:443,cert=c.pem,key=k.pem", "tls-listen:443,cert=c.pem,key=k.pem"),
        ("SSL-L:443,self-signed", "tls-listen:443,self-signed"),
        ("TCP-LISTEN:8000,bind=127.0.0.1", "tcp-listen:127.0.0.1:8000"),
        ("TCP-LISTEN:8000,bind=[::1]", "tcp-listen:[::1]:8000"),
        ("TCP-LISTEN:8000,pf=ip6", "tcp-listen:8000,6"),
        ("STDIO", "stdio"),
    ],
)
def test_socat_names_mean_our_addresses(socat: str, ours: str) -> None:
    theirs, mine = parse_relay_address(socat), parse_relay_address(ours)
    assert (theirs.kind, theirs.endpoint, theirs.argv) == (mine.kind, mine.endpoint, mine.argv)
    assert sorted(theirs.options) == sorted(mine.options)
    assert theirs.text == socat


def test_bind_names_the_listening_host() -> None:
    address = parse_relay_address("tcp-listen:8000,bind=127.0.0.1")
    assert address.endpoint == InetEndpoint("127.0.0.1", 8000)
    assert not address.has("bind")


def test_system_runs_through_the_shell() -> None:
    address = parse_relay_address("SYSTEM:sort | uniq -c")
    assert address.kind == "exec"
    assert address.argv == ("/bin/sh", "-c", "sort | uniq -c")


def test_unix_connect_is_unix() -> None:
    assert parse_relay_address("unix-connect:/run/x.sock").endpoint == UnixEndpoint("/run/x.sock")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("TCP:host:80,bind=10.0.0.1", "option 'bind' is supported on tcp, udp and tls listeners"),
        ("UNIX-LISTEN:/tmp/s,bind=x", "option 'bind' is supported on tcp, udp and tls listeners"),
        ("TCP-LISTEN:127.0.0.1:80,bind=10.0.0.1", "give the address once"),
        ("TCP4-LISTEN:80,6", "choose at most one of the options 4 and 6"),
        ("TCP-LISTEN:80,pf=ipx", "pf must be ip4 or ip6"),
        ("SYSTEM:", "system needs a command"),
        ("SCTP:host:80", "unknown kind 'SCTP'"),
    ],
)
def test_what_socketkit_lacks_is_refused_by_name(text: str, why: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_relay_address(text)
    assert why in str(info.value)
    assert "\n" not in str(info.value)
