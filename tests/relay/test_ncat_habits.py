"""What ncat users type, and what they expect of it (subprocesses, loopback, port 0)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from relaysupport import LOOPBACK_TIMEOUT, Proc, recv_all, run, running, sha, sk

PAYLOAD = os.urandom(1 << 20)

pytestmark = pytest.mark.timeout(60)


@contextlib.contextmanager
def closed_port_pair() -> Iterator[int]:
    """Two adjacent ports held bound (not listening, so connects are refused): the first."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                yield port
                return
    pytest.skip("no two adjacent free ports")


def test_zero_probe_of_a_closed_range_is_the_one_error_line() -> None:
    with closed_port_pair() as port:
        done = run(sk("connect", "-z", "127.0.0.1", f"{port}-{port + 1}"))
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert err == f"socketkit: error: no port open on 127.0.0.1 in {port}-{port + 1}\n"


def _one_client_session(lst: Proc, data: bytes) -> None:
    """Send ``data`` to the listener and end the stream: the listener (whose
    input is empty) ends the session and exits 0 with ``data`` on its output."""
    with socket.create_connection(("127.0.0.1", lst.port()), timeout=LOOPBACK_TIMEOUT) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
    assert lst.wait() == 0, lst.err_text
    assert lst.out == data


def test_nc_lvnp_the_most_typed_listener_line() -> None:
    with running(sk("nc", "-lvnp", "0")) as lst:
        _one_client_session(lst, b"over -lvnp\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["nc", "-n", "localhost", "9"],
        ["nc", "-lnp", "0", "localhost"],
        ["listen", "-n", "--allow", "localhost", "0"],
    ],
)
def test_nodns_refuses_host_names(argv: list[str]) -> None:
    done = run(sk(*argv))
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.startswith("socketkit: error: -n: "), err
    assert err.count("\n") == 1, err


def test_listener_ends_when_the_client_is_done_though_its_stdin_stays_open() -> None:
    """`sleep 60 | nc -l -p P > out`, fed by `... | nc HOST P --send-only`: ends with the transfer."""
    r, w = os.pipe()  # the listener's stdin: open (and silent) until the test ends
    try:
        with running(sk("nc", "-lvp", "0"), stdin=r) as lst:
            port = lst.port()
            done = run(sk("nc", "127.0.0.1", str(port), "--send-only"), PAYLOAD)
            assert done.returncode == 0, done.stderr
            assert lst.wait() == 0, lst.err_text
            assert sha(lst.out) == sha(PAYLOAD)
    finally:
        os.close(r)
        os.close(w)


def test_idle_timeout_ends_a_silent_session() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r, w = os.pipe()  # stdin stays open: only -i can end it
        try:
            with running(sk("nc", "-i", "0.3", "127.0.0.1", str(port)), stdin=r) as cli:
                conn, _ = srv.accept()
                with conn:
                    assert cli.wait() == 0, cli.err_text
        finally:
            os.close(r)
            os.close(w)


def test_output_file_has_both_directions_and_append_keeps_what_was_there(tmp_path: Path) -> None:
    out = tmp_path / "session.bin"
    out.write_bytes(b"old ")
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        done = run(sk("connect", "-o", str(out), "127.0.0.1", str(port)), b"ping\n")
        assert done.stdout == b"ping\n", done.stderr
    assert out.read_bytes() == b"ping\nping\n"
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        argv = ["connect", "-o", str(out), "--append-output", "127.0.0.1", str(port)]
        done = run(sk(*argv), b"pong\n")
        assert done.stdout == b"pong\n", done.stderr
    assert out.read_bytes() == b"ping\nping\npong\npong\n"


def test_allowfile_denyfile_and_host_names(tmp_path: Path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# lab machines\n10.1.2.3\n127.0.0.1  # this one\n")
    with running(sk("listen", "-v", "-k", "--denyfile", str(deny), "127.0.0.1", "0")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            assert recv_all(c) == b""
        lst.wait_err(r"127\.0\.0\.1:\d+: refused: denied by --deny 127\.0\.0\.1/32")
    allow = tmp_path / "allow.txt"
    allow.write_text("localhost\n")
    with running(sk("nc", "-lv", "--allowfile", str(allow), "127.0.0.1", "0")) as lst:
        _one_client_session(lst, b"let in by name\n")


def test_missing_allowfile_is_one_line() -> None:
    done = run(sk("listen", "--allowfile", "/no/such/file", "0"))
    err = done.stderr.decode()
    assert done.returncode == 2
    assert err.startswith("socketkit: error: --allowfile: cannot read /no/such/file"), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    "flags",
    [["nc", "-s", "127.0.0.1", "-p", "{port}"], ["connect", "--source-port", "{port}"]],
    ids=["nc -s -p", "connect --source-port"],
)
def test_source_address_and_port_when_connecting(flags: list[str]) -> None:
    with socket.socket() as srv, socket.socket() as probe:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        source_port = probe.getsockname()[1]
        probe.close()  # free again: the client binds it
        argv = [f.format(port=source_port) for f in flags]
        with running(sk(*argv, "127.0.0.1", str(port))):
            srv.settimeout(LOOPBACK_TIMEOUT)
            conn, peer = srv.accept()
            conn.close()
        assert peer == ("127.0.0.1", source_port)


def test_nc_max_conns_turns_the_extra_client_away_at_once() -> None:
    with running(sk("nc", "-lvk", "--max-conns", "1", "127.0.0.1", "0")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as first:
            lst.wait_err(r": connected")
            with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as extra:
                assert recv_all(extra) == b""  # closed at once, not kept in the backlog
            lst.wait_err(r"refused: too many connections \(at most 1 at once\)")
            first.sendall(b"still served\n")
            lst.wait_out(b"still served\n")


def test_nc_max_conns_zero_turns_every_client_away() -> None:
    with running(sk("nc", "-lv", "--max-conns", "0", "127.0.0.1", "0")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            assert recv_all(c) == b""
        lst.wait_err(r"refused: too many connections \(at most 0 at once\)")


ENV_LINE = "echo $NCAT_REMOTE_ADDR $NCAT_REMOTE_PORT $NCAT_LOCAL_ADDR $NCAT_LOCAL_PORT $NCAT_PROTO"


@pytest.mark.parametrize("crlf", [[], ["-C"]], ids=["socket", "pipes"])
def test_exec_child_gets_ncat_environment_when_listening(crlf: list[str]) -> None:
    with running(sk("nc", "-lv", *crlf, "127.0.0.1", "0", "-c", ENV_LINE)) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            me = c.getsockname()
            c.shutdown(socket.SHUT_WR)
            got = recv_all(c)
    end = b"\r\n" if crlf else b"\n"
    assert got == f"127.0.0.1 {me[1]} 127.0.0.1 {port} TCP".encode() + end


def test_exec_child_gets_ncat_environment_when_connecting() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with running(sk("nc", "127.0.0.1", str(port), "-c", ENV_LINE)):
            srv.settimeout(LOOPBACK_TIMEOUT)
            conn, peer = srv.accept()
            with conn:
                got = recv_all(conn)
    assert got == f"127.0.0.1 {port} 127.0.0.1 {peer[1]} TCP\n".encode()


def test_crlf_rewrites_what_the_program_writes_not_what_the_client_sends() -> None:
    with running(sk("nc", "-lv", "-C", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            c.sendall(b"a\nb\n")
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"a\r\nb\r\n"
        assert lst.wait() == 0, lst.err_text


def test_hex_dump_sees_an_exec_session(tmp_path: Path) -> None:
    dump = tmp_path / "dump.txt"
    with running(sk("listen", "-v", "--hex-dump", str(dump), "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        done = run(sk("connect", "127.0.0.1", str(port)), b"Hello\n")
        assert done.stdout == b"Hello\n", done.stderr
        assert lst.wait() == 0, lst.err_text
    text = dump.read_text()
    assert "> 00000000  48 65 6c 6c 6f 0a" in text
    assert "< 00000000  48 65 6c 6c 6f 0a" in text


def _recv_retrying(sock: socket.socket, send: Callable[[], object]) -> bytes:
    """Send (again) until ``sock`` hears something: a member is in the chat once
    its first read is pending, which nothing outside the broker can see."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    while time.monotonic() < deadline:
        send()
        try:
            return sock.recv(100)
        except TimeoutError:
            continue
    raise AssertionError("nothing arrived")


def test_broker_takes_the_listeners_own_stdio_into_the_chat() -> None:
    r, w = os.pipe()
    try:
        with running(sk("nc", "-lv", "--broker", "127.0.0.1", "0"), stdin=r) as lst:
            port = lst.port()
            a = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            b = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            with a, b:
                lst.wait_err(r"(: connected[\s\S]*){2}")
                got = _recv_retrying(b, lambda: a.sendall(b"hi from a\n"))
                assert got.startswith(b"hi from a\n")
                lst.wait_out(b"hi from a\n")  # the listener hears the chat
                for c in (a, b):  # ...and speaks in it
                    assert _recv_retrying(c, lambda: os.write(w, b"all\n")).startswith(b"all\n")
    finally:
        os.close(r)
        os.close(w)


def test_broker_send_only_speaks_but_keeps_stdout_out() -> None:
    r, w = os.pipe()
    try:
        argv = sk("nc", "-lv", "--broker", "--send-only", "127.0.0.1", "0")
        with running(argv, stdin=r) as lst:
            port = lst.port()
            a = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            b = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            with a, b:
                lst.wait_err(r"(: connected[\s\S]*){2}")
                assert _recv_retrying(b, lambda: a.sendall(b"psst\n")).startswith(b"psst\n")
                assert _recv_retrying(a, lambda: os.write(w, b"news\n")).startswith(b"news\n")
            lst.wait_err(r"(closed[\s\S]*){2}")
            lst.proc.send_signal(signal.SIGTERM)
            assert lst.wait() == 0
            assert lst.out == b""
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Unix datagram clients autobind")
def test_unix_datagram_connect_and_listen(tmp_path: Path) -> None:
    path = str(tmp_path / "d.sock")
    with running(sk("nc", "-lvUu", path, "-e", "cat")) as lst:
        lst.wait_err(r"listening UDP on unix:")
        done = run(sk("nc", "-Uu", "-q", "2", path), b"one datagram\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"one datagram\n"


def test_zero_probe_over_udp() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        ok = run(sk("nc", "-zvu", "-w", "0.3", "127.0.0.1", str(port)))
        assert ok.returncode == 0, ok.stderr
        assert f"connection to 127.0.0.1:{port} succeeded".encode() in ok.stderr
    closed = run(sk("nc", "-zu", "127.0.0.1", str(port)))  # nothing bound there now
    err = closed.stderr.decode()
    assert closed.returncode == 3, err
    assert err.startswith("socketkit: error: UDP port closed at 127.0.0.1:"), err
    assert err.count("\n") == 1, err


def _udp_client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(LOOPBACK_TIMEOUT)
    return c


def test_udp_keep_open_runs_a_program_per_peer() -> None:
    with running(sk("nc", "-lvuk", "127.0.0.1", "0", "-c", 'read l; echo "got $l"')) as lst:
        port = lst.port()
        with _udp_client() as a, _udp_client() as b:
            a.sendto(b"from a\n", ("127.0.0.1", port))
            b.sendto(b"from b\n", ("127.0.0.1", port))
            assert a.recvfrom(100) == (b"got from a\n", ("127.0.0.1", port))
            assert b.recvfrom(100) == (b"got from b\n", ("127.0.0.1", port))
            lst.wait_err(r"(exited with status 0[\s\S]*){2}")
            a.sendto(b"again\n", ("127.0.0.1", port))  # a new program for a
            assert a.recvfrom(100)[0] == b"got again\n"


def test_udp_keep_open_program_gets_ncat_environment() -> None:
    with running(sk("nc", "-lvuk", "127.0.0.1", "0", "-c", f"read l; {ENV_LINE}")) as lst:
        port = lst.port()
        with _udp_client() as a:
            a.sendto(b"hi\n", ("127.0.0.1", port))
            me = a.getsockname()[1]
            assert a.recv(100) == f"127.0.0.1 {me} 127.0.0.1 {port} UDP\n".encode()


def test_udp_keep_open_to_stdio_hears_every_peer_and_answers_all() -> None:
    r, w = os.pipe()
    try:
        with running(sk("nc", "-lvuk", "127.0.0.1", "0"), stdin=r) as lst:
            port = lst.port()
            with _udp_client() as a, _udp_client() as b:
                a.sendto(b"from a\n", ("127.0.0.1", port))
                lst.wait_out(b"from a\n")
                b.sendto(b"from b\n", ("127.0.0.1", port))
                lst.wait_out(b"from b\n")
                os.write(w, b"to all\n")
                assert a.recv(100) == b"to all\n"
                assert b.recv(100) == b"to all\n"
    finally:
        os.close(r)
        os.close(w)


def test_source_address_with_listen_is_the_address_to_bind() -> None:
    with running(sk("nc", "-lv", "-s", "127.0.0.1", "-p", "0")) as lst:
        assert "(127.0.0.1:" in lst.wait_err(r"listening on port \d+ \(.*\)").group(0)


def test_hex_dump_file_starts_empty_unless_appending(tmp_path: Path) -> None:
    dump = tmp_path / "dump.txt"
    for extra in ([], ["--append-output"]):
        with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
            port = lst.port()
            argv = ["connect", "--hex-dump", str(dump), *extra, "127.0.0.1", str(port)]
            assert run(sk(*argv), b"Hello\n").stdout == b"Hello\n"
    assert dump.read_text().count("> 00000000  48 65 6c 6c 6f 0a") == 2
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        assert run(sk("connect", "--hex-dump", str(dump), "127.0.0.1", str(port)), b"Hi\n")
    assert dump.read_text().count("> 00000000") == 1
