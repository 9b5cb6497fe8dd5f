"""The proxy's settings without a socket: destination rules, relay grammar, CLI options."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketkit.address import InetEndpoint
from socketkit.cli._proxy import add_proxy_client_options, proxied_address, proxy_from_openbsd_args
from socketkit.cli.proxy import credentials, open_relay_warning
from socketkit.errors import AddressError, ProxyAuthError, ProxyProtocolError, UsageError
from socketkit.framing.http_proxy import HttpConnectClient, HttpProxyServer
from socketkit.framing.tunnel import ProxyKind, Reconnect, TunnelOpen, TunnelRequest
from socketkit.proxy import DestinationPolicy, check_credentials, parse_destination_rule
from socketkit.relay import parse_relay_address
from socketkit.relay._proxy import proxy_spec

# -- destination rules ----------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "host", "port", "address", "matches"),
    [
        ("10.0.0.0/8", "10.1.2.3", 80, None, True),
        ("10.0.0.0/8", "11.0.0.1", 80, None, False),
        ("10.0.0.0/8", "example.com", 80, None, None),  # unknown until resolved
        ("10.0.0.0/8", "example.com", 80, "10.9.9.9", True),
        ("::1", "::1", 22, None, True),
        ("::ffff:10.0.0.0/104", "10.0.0.7", 1, None, True),
        (":22", "anything.example", 22, None, True),
        (":22", "anything.example", 23, None, False),
        (":1-1023", "h", 1023, None, True),
        ("10.0.0.0/8:443", "10.0.0.1", 443, None, True),
        ("10.0.0.0/8:443", "10.0.0.1", 80, None, False),
        ("[::1]:22", "::1", 22, None, True),
        ("example.com", "EXAMPLE.com.", 80, None, True),
        ("example.com", "www.example.com", 80, None, False),
        (".example.com", "www.example.com", 80, None, True),
        ("*.example.com", "example.com", 80, None, True),
        ("example.com:443", "example.com", 80, None, False),
    ],
)
def test_rules_match(
    rule: str, host: str, port: int, address: str | None, matches: bool | None
) -> None:
    from ipaddress import ip_address

    parsed = parse_destination_rule(rule)
    ip = ip_address(address or host) if (address or ":" in host or host[0].isdigit()) else None
    if ip is not None and ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    name = None if address is None and ip is not None else host
    assert parsed.matches(name, ip, port) is matches


@pytest.mark.parametrize("rule", ["", ":0", ":70000", ":5-2", "a..b", "[::1", "[::1]x", "h:x"])
def test_bad_rules_are_one_line_address_errors(rule: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_destination_rule(rule)
    assert "\n" not in str(info.value)


def test_policy_deny_wins_and_allow_lists_close_the_rest() -> None:
    # The reasons name the lists as the caller does (here, the command line).
    names = ("--allow-dest", "--deny-dest")
    policy = DestinationPolicy.from_strings(
        ["10.0.0.0/8", "example.com"], ["10.0.0.1", ":22"], names=names
    )
    assert policy.check("10.0.0.2", 80) is None
    assert policy.check("10.0.0.1", 80) == "destination denied by --deny-dest 10.0.0.1"
    assert policy.check("10.0.0.2", 22) == "destination denied by --deny-dest :22"
    assert policy.check("192.0.2.1", 80) == "destination not in any --allow-dest rule"
    assert policy.check("example.com", 80) is None
    # A name only an address rule could let in: decided once resolved.
    assert policy.check("other.test", 80) is None
    assert policy.check("other.test", 80, "10.0.0.3") is None
    assert policy.check("other.test", 80, "10.0.0.1") is not None
    assert policy.check("other.test", 80, "192.0.2.1") is not None
    assert DestinationPolicy().check("anything", 1) is None


@given(st.text(max_size=40))
def test_any_rule_text_parses_or_is_an_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_destination_rule(text)


# -- relay grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "dns", "proxy", "target", "user", "password"),
    [
        ("socks5:127.0.0.1:1080:example.com:80", ProxyKind.SOCKS5, "remote",
         InetEndpoint("127.0.0.1", 1080), InetEndpoint("example.com", 80), None, None),
        ("socks5:[::1]:1080:[2001:db8::1]:80,auth=u:p:w", ProxyKind.SOCKS5, "remote",
         InetEndpoint("::1", 1080), InetEndpoint("2001:db8::1", 80), "u", "p:w"),
        ("SOCKS4A:p:h:22,socksport=9050,socksuser=bob", ProxyKind.SOCKS4, "remote",
         InetEndpoint("p", 9050), InetEndpoint("h", 22), "bob", None),
        ("socks4:p:1080:h:22", ProxyKind.SOCKS4, "local",
         InetEndpoint("p", 1080), InetEndpoint("h", 22), None, None),
        ("PROXY:p:h:443,proxyauth=u:p,resolve", ProxyKind.HTTP, "local",
         InetEndpoint("p", 8080), InetEndpoint("h", 443), "u", "p"),
        ("http-connect:p:3128:h:80,dns=both", ProxyKind.HTTP, "both",
         InetEndpoint("p", 3128), InetEndpoint("h", 80), None, None),
    ],
)  # fmt: skip
def test_proxy_addresses(
    text: str,
    kind: ProxyKind,
    dns: str,
    proxy: InetEndpoint,
    target: InetEndpoint,
    user: str | None,
    password: str | None,
) -> None:
    addr = parse_relay_address(text)
    assert addr.target == target
    assert not addr.listener
    spec = proxy_spec(addr)
    assert (spec.address, spec.kind, spec.dns) == (proxy, kind, dns)
    assert (spec.username, spec.password) == (user, password)


def test_proxy_listen_binds_loopback_unless_told() -> None:
    addr = parse_relay_address("proxy-listen:1080,auth=a:b,deny-dest=:22,deny-dest=10.0.0.0/8")
    assert addr.listener
    assert addr.endpoint == InetEndpoint("127.0.0.1", 1080)
    assert addr.get_all("deny-dest") == [":22", "10.0.0.0/8"]
    assert parse_relay_address("proxy-listen:0.0.0.0:0").endpoint == InetEndpoint("0.0.0.0", 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("socks5:h:80", "PROXY:PPORT:HOST:PORT"),
        ("socks5:", "needs"),
        ("socks5:p:1:h:2:3", "PROXY:PPORT:HOST:PORT"),
        ("socks5:[::1:1:h:2", "brackets"),
        ("tcp:h:1,auth=a:b", "proxy addresses only"),
        ("tcp:h:1,dns=local", "proxy addresses"),
        ("socks5:p:1:h:2,dns=sometimes", "dns must be"),
        ("socks5:p:1:h:2,auth=nocolon", "USER:PASS"),
        ("socks4:p:h:2,socksport=x", "socksport"),
        ("tcp-listen:1,allow-dest=x", "proxy-listen only"),
    ],
)
def test_proxy_address_errors(text: str, message: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_relay_address(text)
    assert message in str(info.value)


# -- command-line options ----------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("where", nargs="*")
    parser.add_argument("-x", action="store_true", dest="hex_stderr")
    for flag in ("-u", "-U", "--tls"):
        parser.add_argument(flag, action="store_true")
    add_proxy_client_options(parser)
    args = parser.parse_args(list(argv))
    args.udp, args.unixsock = args.u, args.U
    return args


def test_ncat_options_become_a_proxy_address() -> None:
    target = InetEndpoint("example.com", 80)
    assert proxied_address(_args(), "example.com", "80") is None
    addr = proxied_address(_args("--proxy", "127.0.0.1"), "example.com", "80")
    assert addr is not None
    assert addr.kind == "http-connect"
    assert addr.endpoint == InetEndpoint("127.0.0.1", 3128)
    assert addr.target == target
    spec = proxy_spec(addr)
    assert spec.dns == "remote"
    assert spec.kind is ProxyKind.HTTP
    socks = proxied_address(
        _args("--proxy", "[::1]:9050", "--proxy-type", "socks4", "--proxy-auth", "bob:x",
              "--proxy-dns", "local"),
        "example.com",
        "80",
    )  # fmt: skip
    assert socks is not None
    spec = proxy_spec(socks)
    assert (spec.kind, spec.username, spec.password, spec.dns) == (
        ProxyKind.SOCKS4, "bob", None, "local"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--proxy-type", "socks5"], "need --proxy"),
        (["--proxy", "p:1", "-u"], "cannot be combined"),
        (["--proxy", "p:1", "--tls"], "cannot be combined"),
        (["--proxy", "p:99999"], "--proxy"),
        (["--proxy", "p:1", "--proxy-auth", "nocolon"], "USER:PASS"),
    ],
)
def test_proxy_option_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        proxied_address(_args(*argv), "h", "1")


@pytest.mark.parametrize(
    ("argv", "proxy", "rest", "hex_dump"),
    [
        (["-X", "5", "-x", "127.0.0.1:1080", "h", "80"], "127.0.0.1:1080", ["h", "80"], False),
        (["-x", "[::1]:1080", "h", "80"], "[::1]:1080", ["h", "80"], False),
        (["-x", "p:3128", "h", "80"], "p:3128", ["h", "80"], False),
        (["-x", "h", "80"], None, ["h", "80"], True),  # the hex dump, as before
        (["-x", "::1", "80"], None, ["::1", "80"], True),
    ],
)
def test_openbsd_x_is_the_proxy_only_with_a_host_port(
    argv: list[str], proxy: str | None, rest: list[str], hex_dump: bool
) -> None:
    args = _args(*argv)
    assert proxy_from_openbsd_args(args, args.where) == rest
    assert (args.proxy, args.hex_stderr) == (proxy, hex_dump)


def test_server_credentials_and_warning() -> None:
    assert credentials("alice:s3:cret") == ("alice", "s3:cret")
    assert credentials(None) is None
    for bad in ("alice", ":pw"):
        with pytest.raises(UsageError, match="USER:PASS"):
            credentials(bad)
    check = check_credentials("alice", "s3cret")
    assert check("alice", "s3cret")
    assert not check("alice", "s3cre")
    assert not check("bob", "s3cret")
    assert open_relay_warning("127.0.0.1", auth=False) is None
    assert open_relay_warning("::1", auth=False) is None
    assert open_relay_warning("0.0.0.0", auth=True) is None
    warning = open_relay_warning(None, auth=False)
    assert warning is not None
    assert "every interface" in warning


# -- HTTP Digest, server side --------------------------------------------------


def _tunnel(client: HttpConnectClient, make_server: Callable[[], HttpProxyServer]) -> object:
    """Pass bytes between a client machine and server machines until the tunnel opens."""
    server = make_server()
    for _ in range(20):
        event = client.next_event()
        data = client.data_to_send()
        if data:
            server.receive_data(data)
        if isinstance(event, TunnelOpen):
            return event
        if isinstance(event, Reconnect):
            server = make_server()  # the 407 closed: a new connection
            client.reconnected()
            continue
        if not server.closed and isinstance(server.next_event(), TunnelRequest):
            server.accept()
        client.receive_data(server.data_to_send())
        if server.closed:
            client.receive_data(b"")
    raise AssertionError("no tunnel after 20 turns")


@pytest.mark.parametrize(("password", "opens"), [("s3cret", True), ("wrong", False)])
def test_http_digest_round_trip(password: str, opens: bool) -> None:
    check = check_credentials("alice", "s3cret")

    def make_server() -> HttpProxyServer:
        # One secret for the server's connections, as ProxySettings keeps it.
        return HttpProxyServer(
            authenticate=check, digest_password=check.password_of, digest_secret=b"k" * 32
        )

    client = HttpConnectClient(
        "example.com", 443, username="alice", password=password, preemptive_basic=False
    )
    if opens:
        assert isinstance(_tunnel(client, make_server), TunnelOpen)
    else:
        with pytest.raises(ProxyAuthError, match="407"):
            _tunnel(client, make_server)


@pytest.mark.parametrize("reply", [b"Hello from server\n", b"\x05\x00", b"HTTQ"])
def test_http_client_says_at_once_when_the_reply_is_not_http(reply: bytes) -> None:
    client = HttpConnectClient("example.com", 80)
    client.data_to_send()
    client.receive_data(reply)
    with pytest.raises(ProxyProtocolError, match="does not speak HTTP"):
        client.next_event()
