"""``connect -z`` with ``--proxy``: each port is probed through the proxy, as data would go."""

from __future__ import annotations

import pytest
from proxysupport import proxy_server

from helpers import echo_target, free_port, run_cli

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["socks5", "socks4", "http"])
def test_open_port_is_reported_through_the_proxy(kind: str) -> None:
    with echo_target() as target, proxy_server("-v") as (server, port):
        result = run_cli(
            "connect", "-z", "-v", "--proxy", f"127.0.0.1:{port}", "--proxy-type", kind,
            "127.0.0.1", str(target),
        )  # fmt: skip
        assert result.code == 0, result.err
        assert f"connection to 127.0.0.1:{target} succeeded" in result.err
        server.search(rf"127\.0\.0\.1:{target}", "err")  # the proxy made the connection


def test_closed_port_behind_the_proxy_is_one_line_and_fails() -> None:
    closed = free_port()
    with proxy_server() as (_server, port):
        result = run_cli(
            "connect", "-z", "--proxy", f"127.0.0.1:{port}", "--proxy-type", "socks5",
            "127.0.0.1", str(closed),
        )  # fmt: skip
    assert result.code != 0
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert "proxy" in result.err


def test_port_range_through_the_proxy_finds_the_open_one() -> None:
    with echo_target() as target, proxy_server() as (_server, port):
        result = run_cli(
            "connect", "-z", "-v", "--proxy", f"127.0.0.1:{port}", "--proxy-type", "socks5",
            "127.0.0.1", f"{target - 1}-{target}",
        )  # fmt: skip
    assert result.code == 0, result.err
    assert f"connection to 127.0.0.1:{target} succeeded" in result.err


def test_no_dns_refuses_a_proxy_name() -> None:
    result = run_cli("connect", "-z", "-n", "--proxy", "localhost:1080", "127.0.0.1", "80")
    assert result.code == 2
    assert "-n: the proxy must be a numeric address" in result.err


def test_no_dns_refuses_a_proxy_name_when_connecting_too() -> None:
    result = run_cli("nc", "-n", "--proxy", "localhost:1080", "127.0.0.1", "80")
    assert result.code == 2
    assert "-n: the proxy must be a numeric address" in result.err
