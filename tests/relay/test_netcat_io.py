"""connect / listen / nc on real loopback sockets (subprocesses; port 0 everywhere)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from relaysupport import LOOPBACK_TIMEOUT, Proc, recv_all, run, running, sha, sk

pytestmark = pytest.mark.timeout(60)

PAYLOAD = os.urandom(1 << 20) + bytes(range(256)) * 16  # binary, with every byte value


def test_connect_to_listen_binary_both_ways() -> None:
    back = os.urandom(300_000)
    # listen's own stdin is a pipe: it sends `back` and then EOF.
    r, w = os.pipe()
    proc = Proc(sk("listen", "-v", "127.0.0.1", "0"), stdin=r)
    os.close(r)
    try:
        port = proc.port()

        def send_back() -> None:
            os.write(w, back)
            os.close(w)

        writer = threading.Thread(target=send_back)
        writer.start()
        done = run(sk("connect", "127.0.0.1", str(port)), PAYLOAD)
        writer.join(LOOPBACK_TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert proc.wait() == 0, proc.err_text
        assert len(proc.out) == len(PAYLOAD), proc.err_text
        assert sha(proc.out) == sha(PAYLOAD)
        assert sha(done.stdout) == sha(back)
    finally:
        proc.close()


def test_connect_half_close_keeps_reading() -> None:
    """End of stdin shuts down the write side; the reply still arrives (listen -e sort)."""
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "sort")) as listener:
        port = listener.port()
        done = run(sk("connect", "127.0.0.1", str(port)), b"b\nc\na\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"a\nb\nc\n"
        assert listener.wait() == 0


def test_listen_half_close_towards_client() -> None:
    """listen's stdin EOF half-closes towards the client, which still gets to send."""
    with running(sk("listen", "-v", "127.0.0.1", "0")) as listener:
        port = listener.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            # listen's stdin is /dev/null: it half-closes at once; we read EOF...
            assert recv_all(c) == b""
            # ...and can still send, which listen writes out.
            c.sendall(b"after your EOF\n")
            c.shutdown(socket.SHUT_WR)
        assert listener.wait() == 0
        assert listener.out == b"after your EOF\n"


def test_linger_zero_closes_at_once() -> None:
    """-q 0: for servers that never close, end as soon as input ends."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        done = run(sk("connect", "-q", "0", "127.0.0.1", str(port)), b"ping")
        assert done.returncode == 0, done.stderr
        conn, _ = srv.accept()
        with conn:
            assert recv_all(conn) == b"ping"


def test_exec_python_script_per_connection_keep_open() -> None:
    script = "import sys; data = sys.stdin.buffer.read(); sys.stdout.buffer.write(data[::-1])"
    with running(
        sk("listen", "-v", "-k", "127.0.0.1", "0", "-c", f"{sys.executable} -c '{script}'")
    ) as lst:
        port = lst.port()
        results: dict[int, bytes] = {}

        def client(i: int) -> None:
            data = os.urandom(50_000) + bytes([i])
            out = run(sk("connect", "127.0.0.1", str(port)), data)
            results[i] = out.stdout if out.stdout == data[::-1] else b"MISMATCH " + out.stderr

        threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(LOOPBACK_TIMEOUT * 2)
        assert len(results) == 5
        assert all(not v.startswith(b"MISMATCH") for v in results.values()), results
        lst.wait_err(r"(exited with status 0[\s\S]*){5}")
        lst.proc.send_signal(signal.SIGTERM)
        assert lst.wait() == 0
        assert (
            "zombie"
            not in subprocess.run(
                ["ps", "-o", "stat=", "--ppid", str(lst.proc.pid)], capture_output=True, text=True
            ).stdout
        )


def test_keep_open_stdout_from_many_clients() -> None:
    with running(sk("listen", "-v", "-k", "127.0.0.1", "0")) as lst:
        port = lst.port()
        for i in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
                c.sendall(f"client {i}\n".encode())
        lst.wait_err(r"(closed[\s\S]*){3}")
        lst.proc.send_signal(signal.SIGTERM)
        assert lst.wait() == 0
        assert sorted(lst.out.splitlines()) == [b"client 0", b"client 1", b"client 2"]


def test_broker_relays_between_clients() -> None:
    with running(sk("listen", "-v", "--broker", "127.0.0.1", "0")) as lst:
        port = lst.port()
        a = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
        b = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
        with a, b:
            lst.wait_err(r"(: connected[\s\S]*){2}")
            # both registered once their first read is pending; retry until b hears a
            b.settimeout(0.2)
            got = b""
            for _ in range(50):
                a.sendall(b"hi from a\n")
                try:
                    got = b.recv(100)
                    break
                except TimeoutError:
                    continue
            assert got.startswith(b"hi from a\n")


def test_allow_deny_refusal_is_logged_and_closed() -> None:
    with running(sk("listen", "-v", "-k", "--deny", "127.0.0.0/8", "127.0.0.1", "0")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            assert recv_all(c) == b""
        lst.wait_err(r"127\.0\.0\.1:\d+: refused: denied by --deny 127\.0\.0\.0/8")
    with running(sk("listen", "-v", "--allow", "10.0.0.0/8", "127.0.0.1", "0")) as lst:
        port = lst.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as c:
            assert recv_all(c) == b""
        lst.wait_err(r"127\.0\.0\.1:\d+: refused: not in any --allow range")


def test_udp_round_trip() -> None:
    with running(sk("listen", "-v", "-u", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        done = run(sk("connect", "-u", "-w", "1", "127.0.0.1", str(port)), b"datagram\n")
        assert done.stdout == b"datagram\n", done.stderr


def test_unix_socket_round_trip(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "s.sock")
    with running(sk("listen", "-v", "-U", path, "-e", "cat")) as lst:
        lst.wait_err(r"listening on unix:")
        done = run(sk("connect", "-U", path), PAYLOAD)
        assert done.returncode == 0, done.stderr
        assert sha(done.stdout) == sha(PAYLOAD)


def test_zero_probe() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        ok = run(sk("connect", "-z", "-v", "127.0.0.1", str(port)))
        assert ok.returncode == 0
        assert b"succeeded" in ok.stderr
    refused = run(sk("connect", "-z", "127.0.0.1", str(port)))
    assert refused.returncode == 3
    assert refused.stderr.decode().count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["connect", "127.0.0.1", "70000"], 2, "65535"),
        (["connect", "no-such-host.invalid", "80"], 2, "cannot resolve"),
        (["listen", "-p", "abc"], 2, "invalid port"),
        (["relay", "tcp:1.2.3.4", "stdio"], 2, "PORT"),
        (["relay", "ftp:x:1", "stdio"], 2, "unknown kind"),
        (["listen", "-e", "/no/such/program"], 2, "cannot run"),
        (["connect", "--insecure", "127.0.0.1", "1"], 2, "needs --tls"),
    ],
)
def test_bad_input_one_line(argv: list[str], code: int, needle: str) -> None:
    done = run(sk(*argv))
    err = done.stderr.decode()
    assert done.returncode == code, err
    assert needle in err
    assert err.count("\n") == 1, err


def test_refused_is_exit_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        done = run(sk("connect", "127.0.0.1", str(port)))
    assert done.returncode == 3
    assert b"connection refused by 127.0.0.1" in done.stderr


def test_sigterm_ends_listener_cleanly() -> None:
    with running(sk("listen", "-v", "-k", "127.0.0.1", "0")) as lst:
        lst.port()
        lst.proc.send_signal(signal.SIGTERM)
        assert lst.wait() == 0


def test_sigint_exits_130() -> None:
    with running(sk("listen", "-v", "127.0.0.1", "0")) as lst:
        lst.port()
        lst.proc.send_signal(signal.SIGINT)
        assert lst.wait() == 130


def test_hex_dump_to_file(tmp_path: object) -> None:
    dump = os.path.join(str(tmp_path), "dump.txt")
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        done = run(sk("connect", "--hex-dump", dump, "127.0.0.1", str(port)), b"Hello\n")
        assert done.stdout == b"Hello\n"
    with open(dump) as f:
        text = f.read()
    assert "> 00000000  48 65 6c 6c 6f 0a" in text
    assert "< 00000000  48 65 6c 6c 6f 0a" in text


def test_crlf() -> None:
    with running(sk("listen", "-v", "127.0.0.1", "0")) as lst:
        port = lst.port()
        run(sk("connect", "--crlf", "127.0.0.1", str(port)), b"a\nb\n")
        assert lst.wait() == 0
        assert lst.out == b"a\r\nb\r\n"
