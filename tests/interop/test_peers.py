"""The socket-demo peers (peers/c, peers/java) against each other, in every pairing.

These tests pin the peers' contract (see peers/README.md): they are the
foreign programs the rest of the test-suite checks socketkit against.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from peers import PEER_DEADLINE, Proc, c_cmd, java_cmd, needs_ipv6, needs_unix, run

LANGUAGES = ("c", "java")

# (language, program) -> command builder for that peer.
PROGRAMS = {
    ("c", "tcp_server"): lambda *a: c_cmd("tcp_server", *a),
    ("c", "tcp_client"): lambda *a: c_cmd("tcp_client", *a),
    ("c", "udp_server"): lambda *a: c_cmd("udp_server", *a),
    ("c", "udp_client"): lambda *a: c_cmd("udp_client", *a),
    ("java", "tcp_server"): lambda *a: java_cmd("TCPServer", *a),
    ("java", "tcp_client"): lambda *a: java_cmd("TCPClient", *a),
    ("java", "udp_server"): lambda *a: java_cmd("UDPServer", *a),
    ("java", "udp_client"): lambda *a: java_cmd("UDPClient", *a),
}

TCP_LISTENING = r"^Server listening on port (\d+)$"
UDP_LISTENING = r"^UDP server listening on port (\d+)$"


def peer(language: str, program: str, *args: str) -> list[str]:
    return PROGRAMS[(language, program)](*args)


def expected_tcp_server_output(server: str, client: str, listening: str) -> str:
    # The C server prints the bytes exactly as received: the Java client's
    # message ends with a newline, which shows up as an extra empty line.
    # The Java server reads a line, so it never shows the newline.
    newline = "\n" if (server, client) == ("c", "java") else ""
    return f"{listening}\nClient connected\nReceived: Hello from client{newline}\n"


# -- every pairing over IPv4 ------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", LANGUAGES)
@pytest.mark.parametrize("client", LANGUAGES)
@pytest.mark.usefixtures("built_peers")
def test_tcp_pairing(client: str, server: str) -> None:
    with Proc(peer(server, "tcp_server", "0")) as srv:
        port = int(srv.wait_for(TCP_LISTENING).group(1))
        assert port != 0

        code, out, err = run(peer(client, "tcp_client", "127.0.0.1", str(port)), PEER_DEADLINE)

        assert (code, out) == (0, "Received: Hello from server\n"), err
        assert srv.wait(PEER_DEADLINE) == 0, srv.stderr
        assert srv.stdout == expected_tcp_server_output(
            server, client, f"Server listening on port {port}"
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", LANGUAGES)
@pytest.mark.parametrize("client", LANGUAGES)
@pytest.mark.usefixtures("built_peers")
def test_udp_pairing(client: str, server: str) -> None:
    with Proc(peer(server, "udp_server", "0")) as srv:
        port = int(srv.wait_for(UDP_LISTENING).group(1))
        assert port != 0

        code, out, err = run(peer(client, "udp_client", "127.0.0.1", str(port)), PEER_DEADLINE)

        assert (code, out) == (0, "Received: Message received\n"), err
        srv.wait_for(r"^Received: Hello from UDP client$")
        # The UDP server loops forever: it is still running, ready for more.
        assert srv.returncode is None
        srv.stop()
        assert srv.stdout == (
            f"UDP server listening on port {port}\nReceived: Hello from UDP client\n"
        )


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("built_peers")
def test_udp_server_serves_more_than_one_datagram() -> None:
    with Proc(c_cmd("udp_server", "0")) as srv:
        port = srv.wait_for(UDP_LISTENING).group(1)
        for _ in range(2):
            code, out, err = run(c_cmd("udp_client", "127.0.0.1", port), PEER_DEADLINE)
            assert (code, out) == (0, "Received: Message received\n"), err
            srv.wait_for(r"^Received: Hello from UDP client$")


# -- C only: IPv6 and Unix-domain sockets -----------------------------------------


@needs_ipv6
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("built_peers")
def test_c_tcp_ipv6() -> None:
    with Proc(c_cmd("tcp_server", "-6", "0")) as srv:
        port = srv.wait_for(TCP_LISTENING).group(1)

        code, out, err = run(c_cmd("tcp_client", "::1", port), PEER_DEADLINE)

        assert (code, out) == (0, "Received: Hello from server\n"), err
        assert srv.wait(PEER_DEADLINE) == 0, srv.stderr
        assert srv.stdout == (
            f"Server listening on port {port}\nClient connected\nReceived: Hello from client\n"
        )


@needs_ipv6
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("built_peers")
def test_c_udp_ipv6() -> None:
    with Proc(c_cmd("udp_server", "-6", "0")) as srv:
        port = srv.wait_for(UDP_LISTENING).group(1)

        code, out, err = run(c_cmd("udp_client", "::1", port), PEER_DEADLINE)

        assert (code, out) == (0, "Received: Message received\n"), err
        srv.wait_for(r"^Received: Hello from UDP client$")


@needs_unix
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("built_peers")
def test_c_unix_stream(tmp_path: Path) -> None:
    path = tmp_path / "tcp.sock"
    path.write_text("stale")  # a left-over file must not stop the server
    with Proc(c_cmd("tcp_server", "-U", str(path))) as srv:
        assert srv.wait_for(r"^Server listening on (.+)$").group(1) == str(path)

        code, out, err = run(c_cmd("tcp_client", "-U", str(path)), PEER_DEADLINE)

        assert (code, out) == (0, "Received: Hello from server\n"), err
        assert srv.wait(PEER_DEADLINE) == 0, srv.stderr
        assert srv.stdout == (
            f"Server listening on {path}\nClient connected\nReceived: Hello from client\n"
        )
    assert not path.exists()  # the server removes its socket file on exit


@needs_unix
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("built_peers")
def test_c_unix_datagram(tmp_path: Path) -> None:
    path = tmp_path / "udp.sock"
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(client_tmp)}
    with Proc(c_cmd("udp_server", "-U", str(path))) as srv:
        assert srv.wait_for(r"^UDP server listening on (.+)$").group(1) == str(path)

        code, out, err = run(c_cmd("udp_client", "-U", str(path)), PEER_DEADLINE, env=env)

        assert (code, out) == (0, "Received: Message received\n"), err
        srv.wait_for(r"^Received: Hello from UDP client$")
        srv.stop()
        assert srv.stdout == f"UDP server listening on {path}\nReceived: Hello from UDP client\n"
        assert srv.stderr == ""
    # The client bound a temporary address of its own and removed it.
    assert list(client_tmp.iterdir()) == []


# -- failures: one line on stderr, exit code 1 ------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.usefixtures("built_peers")
def test_udp_client_times_out_without_reply(language: str) -> None:
    # A bound socket that never answers: the datagram is delivered, no reply comes.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = str(silent.getsockname()[1])

        code, out, err = run(peer(language, "udp_client", "127.0.0.1", port), PEER_DEADLINE)

        assert silent.recv(2048) == b"Hello from UDP client"
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert "no reply" in err, err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.usefixtures("built_peers")
def test_tcp_client_connection_refused(language: str) -> None:
    # Find a port nobody listens on: bind, note the port, close.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])

    code, out, err = run(peer(language, "tcp_client", "127.0.0.1", port), PEER_DEADLINE)

    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1, err
    assert "refused" in err.lower(), err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("program", ["tcp_server", "tcp_client", "udp_server", "udp_client"])
@pytest.mark.usefixtures("built_peers")
def test_c_usage_errors(program: str) -> None:
    code, out, err = run(c_cmd(program, "-x"), PEER_DEADLINE)
    assert (code, out) == (1, "")
    assert err.startswith(f"usage: {program} "), err
    assert len(err.splitlines()) == 1, err
