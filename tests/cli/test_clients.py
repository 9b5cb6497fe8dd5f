"""The lecture's clients: addresses, timeouts and values as a user types them."""

from __future__ import annotations

import pytest

from helpers import Proc, free_port, run_cli, socketkit_argv, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_wait_zero_means_no_time_limit(kind: str) -> None:
    """``-w 0`` is 'no limit' for every command (connect and relay read it so too)."""
    with start_server(f"{kind}-server", "--host", "127.0.0.1", "-p", "0", "--once") as srv:
        result = run_cli(f"{kind}-client", "-w", "0", "-p", str(srv.port()))
        assert result.code == 0, result.err
        reply = "Hello from server" if kind == "tcp" else "Message received"
        assert result.out == f"Received: {reply}\n"
        assert srv.wait() == 0


@pytest.mark.parametrize(
    "where",
    [
        ["127.0.0.1", "{port}"],
        ["localhost", "-p", "{port}"],
        ["--host", "127.0.0.1:{port}"],
        ["127.0.0.1:{port}"],
        ["-p", "{port}"],
    ],
    ids=["HOST-PORT", "HOST-p", "host-colon-port", "HOST-colon-PORT", "default-host"],
)
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_host_and_port_as_connect_takes_them(kind: str, where: list[str]) -> None:
    with start_server(f"{kind}-server", "--host", "127.0.0.1", "-p", "0", "--once") as srv:
        port = srv.port()
        argv = [w.format(port=port) for w in where]
        result = run_cli(f"{kind}-client", *argv, "-4")
        assert result.code == 0, result.err
        assert result.out.startswith("Received: ")
        assert srv.wait() == 0


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["-p", "0"], "port 0: a client needs the server's port, from 1 to 65535"),
        (["127.0.0.1", "0"], "port 0: a client needs the server's port"),
        (["-p", "-1"], "argument -p/--port: invalid port '-1': expected a number from 0 to 65535"),
        (["--count", "-1"], "argument --count: expected a number of at least 1, got -1"),
        (["--host", "::1:9000"], "ambiguous host '::1:9000': write [::1]:9000 for port 9000"),
        (["127.0.0.1:9000", "-p", "9001"], "give the port once"),
        (["127.0.0.1", "--host", "localhost"], "give the host once"),
        (["[::1", "9000"], "invalid host '[::1': expected [IPV6] or [IPV6]:PORT"),
        (["127.0.0.1:http"], "invalid port 'http'"),
    ],
)
@pytest.mark.parametrize("command", ["tcp-client", "udp-client"])
def test_bad_host_or_port_values_say_what_is_wrong(
    command: str, argv: list[str], text: str
) -> None:
    result = run_cli(command, *argv)
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("socketkit: error: "), result.err
    assert text in lines[0]


def test_wait_for_server_retries_a_refused_connect_until_the_server_is_up() -> None:
    port = free_port()
    client = Proc(socketkit_argv("tcp-client", "-p", str(port), "--wait-for-server", "20"))
    # The client is refused until the server (started second) listens.
    server = start_server("tcp-server", "--host", "127.0.0.1", "-p", str(port), "--once")
    with client, server as srv:
        assert client.wait() == 0, client.err_bytes
        assert client.out_bytes == b"Received: Hello from server\n"
        assert srv.wait() == 0
