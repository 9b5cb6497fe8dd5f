"""The interoperability matrix: socketkit against the lecture's C and Java programs.

Every client (socketkit, the C peer, the Java peer) against every server
(the same three), over TCP and UDP; then IPv6 and Unix-domain sockets between
socketkit and the C peer in all four pairings; then several messages over one
TCP connection. The foreign programs are the socket-demo peers in peers/
(see peers/README.md), run as real processes.

Every server listens on port 0 and the port is read back from its
"listening" line; every wait has a deadline, so a pairing that hangs fails
with the output collected so far instead of blocking the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from helpers import socketkit_argv
from peers import (
    PEER_DEADLINE,
    Proc,
    c_cmd,
    java_cmd,
    needs_ipv6,
    needs_unix,
    run,
)

#: How long a server may take to start listening, a client to finish its
#: exchange, and a TCP server to exit after its client. The JVM starts slowly
#: (well under a second on an idle machine, several seconds on a loaded one).
EXCHANGE_DEADLINE = PEER_DEADLINE
#: How long one whole case (server start, exchange, server exit) may take.
CASE_DEADLINE = 2 * EXCHANGE_DEADLINE
#: How long the socketkit clients wait for a reply (-w). Longer than their
#: default so that a slow JVM on a loaded machine cannot make a UDP client
#: resend (the matrix sends exactly one datagram per exchange, --retries 0).
CLIENT_TIMEOUT = 10.0

IMPLS = ("socketkit", "c", "java")
PROTOCOLS = ("tcp", "udp")

JAVA_PROGRAMS = {
    ("tcp", "server"): "TCPServer",
    ("tcp", "client"): "TCPClient",
    ("udp", "server"): "UDPServer",
    ("udp", "client"): "UDPClient",
}

CLIENT_MESSAGE = {"tcp": "Hello from client", "udp": "Hello from UDP client"}
CLIENT_OUTPUT = {"tcp": "Received: Hello from server\n", "udp": "Received: Message received\n"}
LISTENING = {
    "tcp": r"^(Server listening on (?:port (\d+)|(.+)))$",
    "udp": r"^(UDP server listening on (?:port (\d+)|(.+)))$",
}


# -- command lines ----------------------------------------------------------------


def server_cmd(impl: str, proto: str, *, ipv6: bool = False, unix: Path | None = None) -> list[str]:
    """The server of ``impl`` for ``proto`` on port 0 (or ``::1``, or a Unix socket)."""
    if impl == "socketkit":
        # --once: one client (TCP) or one datagram (UDP), then exit 0.
        args = [f"{proto}-server", "--once"]
        if unix is not None:
            args += ["--unix", str(unix)]
        elif ipv6:
            args += ["--host", "::1", "-p", "0"]
        else:
            args += ["-p", "0"]
        return socketkit_argv(*args)
    if impl == "c":
        program = f"{proto}_server"
        if unix is not None:
            return c_cmd(program, "-U", str(unix))
        return c_cmd(program, *(["-6"] if ipv6 else []), "0")
    if impl == "java":
        assert not ipv6, "the Java peers do IPv4 only"
        assert unix is None, "the Java peers do IPv4 only"
        return java_cmd(JAVA_PROGRAMS[(proto, "server")], "0")
    raise ValueError(impl)


def client_cmd(
    impl: str, proto: str, *, host: str = "127.0.0.1", port: int = 0, unix: Path | None = None
) -> list[str]:
    """The client of ``impl`` for ``proto``, pointed at ``host``/``port`` or ``unix``."""
    if impl == "socketkit":
        args = [f"{proto}-client", "-w", f"{CLIENT_TIMEOUT:g}"]
        if proto == "udp":
            args += ["--retries", "0"]
        if unix is not None:
            args += ["--unix", str(unix)]
        else:
            args += ["--host", host, "-p", str(port)]
        return socketkit_argv(*args)
    if impl == "c":
        program = f"{proto}_client"
        if unix is not None:
            return c_cmd(program, "-U", str(unix))
        return c_cmd(program, host, str(port))
    if impl == "java":
        assert unix is None, "the Java peers have no Unix-domain sockets"
        return java_cmd(JAVA_PROGRAMS[(proto, "client")], host, str(port))
    raise ValueError(impl)


# -- the exchange -----------------------------------------------------------------


def expected_server_output(proto: str, server: str, client: str, listening: str) -> str:
    if proto == "udp":
        return f"{listening}\nReceived: {CLIENT_MESSAGE['udp']}\n"
    # The C server prints the bytes exactly as received: the Java client's
    # message ends with a newline, which shows up as an extra empty line.
    # socketkit and the Java server show the message without it.
    newline = "\n" if (server, client) == ("c", "java") else ""
    return f"{listening}\nClient connected\nReceived: {CLIENT_MESSAGE['tcp']}{newline}\n"


def exchange(
    proto: str,
    client: str,
    server: str,
    *,
    host: str = "127.0.0.1",
    ipv6: bool = False,
    unix: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Start ``server``, run ``client`` against it once, check both sides."""
    started = time.monotonic()
    with Proc(server_cmd(server, proto, ipv6=ipv6, unix=unix)) as srv:
        match = srv.wait_for(LISTENING[proto], EXCHANGE_DEADLINE)
        listening = match.group(1)
        if unix is not None:
            assert match.group(3) == str(unix), listening
            port = 0
        else:
            port = int(match.group(2))
            assert port != 0, listening

        code, out, err = run(
            client_cmd(client, proto, host=host, port=port, unix=unix),
            EXCHANGE_DEADLINE,
            env=env,
        )

        assert (code, out) == (0, CLIENT_OUTPUT[proto]), (
            f"client exit {code}, stdout {out!r}, stderr {err!r}\nserver stdout "
            f"{srv.stdout!r}, stderr {srv.stderr!r}"
        )
        if client == "socketkit":
            assert err == "", err

        if proto == "tcp" or server == "socketkit":
            # One exchange, then exit 0: every TCP server, and the socketkit
            # UDP server with --once.
            assert srv.wait(EXCHANGE_DEADLINE) == 0, srv.stderr
        else:
            # The peers' UDP servers loop for ever; Proc stops them by PID.
            srv.wait_for(rf"^Received: {CLIENT_MESSAGE['udp']}$", EXCHANGE_DEADLINE)
            assert srv.returncode is None, "the UDP peer server should keep serving"
            srv.stop()
        assert srv.stdout == expected_server_output(proto, server, client, listening)
        if server == "socketkit":
            assert srv.stderr == "", srv.stderr
    assert time.monotonic() - started < CASE_DEADLINE


# -- 1. every client x every server, TCP and UDP, over IPv4 -----------------------

MATRIX = [
    pytest.param(proto, client, server, id=f"{proto}-{client}-client-{server}-server")
    for proto in PROTOCOLS
    for client in IMPLS
    for server in IMPLS
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("proto", "client", "server"), MATRIX)
@pytest.mark.usefixtures("built_peers")
def test_matrix(proto: str, client: str, server: str) -> None:
    exchange(proto, client, server)


# -- 2. IPv6 and Unix-domain sockets: socketkit with socketkit and the C peer -----


NATIVE_IMPLS = ("socketkit", "c")
NATIVE_MATRIX = [
    pytest.param(proto, client, server, id=f"{proto}-{client}-client-{server}-server")
    for proto in PROTOCOLS
    for client in NATIVE_IMPLS
    for server in NATIVE_IMPLS
]


@needs_ipv6
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("proto", "client", "server"), NATIVE_MATRIX)
@pytest.mark.usefixtures("built_peers")
def test_ipv6(proto: str, client: str, server: str) -> None:
    # socketkit binds ::1 itself; the C server binds :: (-6).
    exchange(proto, client, server, host="::1", ipv6=True)


@needs_unix
@pytest.mark.timeout(90)
@pytest.mark.parametrize(("proto", "client", "server"), NATIVE_MATRIX)
@pytest.mark.usefixtures("built_peers")
def test_unix(tmp_path: Path, proto: str, client: str, server: str) -> None:
    # tcp-*: a Unix stream socket; udp-*: a Unix datagram socket.
    path = tmp_path / f"{proto}.sock"
    # The C datagram client binds a temporary address of its own in $TMPDIR
    # (socketkit's uses Linux autobind); neither may leave a file behind.
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(client_tmp)}

    exchange(proto, client, server, unix=path, env=env)

    assert list(client_tmp.iterdir()) == []
    if proto == "tcp":
        # Both stream servers remove their socket file when they exit.
        assert not path.exists()


# -- 3. several messages over one connection --------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("built_peers")
def test_tcp_client_count_against_long_running_server() -> None:
    started = time.monotonic()
    with Proc(socketkit_argv("tcp-server", "-p", "0")) as srv:
        port = srv.wait_for(LISTENING["tcp"], EXCHANGE_DEADLINE).group(2)

        code, out, err = run(
            socketkit_argv(
                "tcp-client", "--host", "127.0.0.1", "-p", port, "--count", "3",
                "-w", f"{CLIENT_TIMEOUT:g}",
            ),
            EXCHANGE_DEADLINE,
        )  # fmt: skip

        assert (code, out, err) == (0, CLIENT_OUTPUT["tcp"] * 3, "")
        for _ in range(3):
            srv.wait_for(rf"^Received: {CLIENT_MESSAGE['tcp']}$", EXCHANGE_DEADLINE)
        # Without --once the server keeps serving until it is told to stop.
        assert srv.returncode is None
        os.kill(srv.pid, signal.SIGTERM)
        assert srv.wait(EXCHANGE_DEADLINE) == 0, srv.stderr
        assert "Traceback" not in srv.stderr, srv.stderr
        received = [line for line in srv.stdout.splitlines() if line.startswith("Received:")]
        assert received == [f"Received: {CLIENT_MESSAGE['tcp']}"] * 3, srv.stdout
    assert time.monotonic() - started < CASE_DEADLINE


# -- the lecture's original clients, which the C peer no longer is ----------------


@pytest.mark.timeout(90)
@pytest.mark.usefixtures("built_peers")
def test_socketkit_server_answers_a_client_that_never_half_closes() -> None:
    # The lecture's C and Python clients send "Hello from client" with no
    # newline and do NOT half-close (our C peer does): they just wait in one
    # recv. The server must answer what arrived, not wait for a newline or
    # for the end of the stream, and answer raw bytes with raw bytes.
    with Proc(socketkit_argv("tcp-server", "--once", "-p", "0")) as srv:
        port = int(srv.wait_for(LISTENING["tcp"], EXCHANGE_DEADLINE).group(2))
        with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_DEADLINE) as client:
            client.sendall(b"Hello from client")
            reply = client.recv(1023)
        assert reply == b"Hello from server"
        assert srv.wait(EXCHANGE_DEADLINE) == 0, srv.stderr
        assert srv.stdout == expected_server_output(
            "tcp", "socketkit", "c", f"Server listening on port {port}"
        )
        assert srv.stderr == ""
