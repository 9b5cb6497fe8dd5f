"""Every command with standard input, output or error closed: no hang, no traceback.

A closed descriptor 0, 1 or 2 is the next one a socket would get; the CLI
entry puts the null device there first, so input reads as empty, output is
discarded and the exit code is the command's own. Each command runs as a
subprocess started through ``sh -c 'exec ... N>&-'``, the way a user closes
a stream.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import pytest

from helpers import LOOPBACK_TIMEOUT, free_port, socketkit_argv, start_server

pytestmark = pytest.mark.timeout(120)

CLOSE = {"stdin": "0<&-", "stdout": "1>&-", "stderr": "2>&-"}


def _start(closed: str, *args: str) -> subprocess.Popen[bytes]:
    argv = socketkit_argv(*args)
    redirect = CLOSE[closed]
    pipes: dict[str, Any] = {
        name: subprocess.PIPE for name in ("stdout", "stderr") if name != closed
    }
    return subprocess.Popen(
        ["sh", "-c", f'exec "$0" "$@" {redirect}', *argv],
        stdin=subprocess.DEVNULL if closed != "stdin" else None,
        **pipes,
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=LOOPBACK_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=LOOPBACK_TIMEOUT)
        raise AssertionError("the command hung") from None
    text = (out or b"").decode() + (err or b"").decode()
    assert "Traceback" not in text, text
    assert "Error:" not in text, text
    assert "Exception" not in text, text
    return proc.returncode, text


def _exchange_tcp(port: int, payload: bytes) -> bytes:
    """Connect (retrying until the server listens), send, half-close, read to the end."""
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # the retry interval of a connect loop
    with s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def _exchange_udp(port: int) -> bytes:
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        while True:
            s.sendto(b"hi", ("127.0.0.1", port))
            try:
                return s.recv(2048)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # the resend interval of a UDP client


STREAMS = list(CLOSE)


@pytest.mark.parametrize("closed", STREAMS)
@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("tcp-client", "-w", "5"), 3),
        (("udp-client", "-w", "0.3", "--retries", "0"), 3),
        (("connect", "-w", "5", "127.0.0.1"), 3),
        (("nc", "-w", "5", "127.0.0.1"), 3),
        (("bench", "client", "127.0.0.1", "-t", "1"), 3),
    ],
    ids=["tcp-client", "udp-client", "connect", "nc", "bench-client"],
)
def test_clients_against_a_closed_port(closed: str, args: tuple[str, ...], code: int) -> None:
    port = str(free_port())
    full = (*args, port) if args[0] in ("connect", "nc", "bench") else (*args, "-p", port)
    if args[0] == "bench":
        full = (*args, "-p", port)
    rc, text = _finish(_start(closed, *full))
    assert rc in (code, 5) if args[0] == "udp-client" else rc == code, text
    if closed != "stderr":
        assert text.count("socketkit: error:") == 1, text


@pytest.mark.parametrize("closed", STREAMS)
def test_demo(closed: str) -> None:
    rc, text = _finish(_start(closed, "demo"))
    assert rc == 0, text
    if closed != "stdout":
        assert "both exchanges done" in text


@pytest.mark.parametrize("closed", STREAMS)
def test_relay_to_a_closed_port(closed: str) -> None:
    rc, text = _finish(_start(closed, "relay", "-", f"tcp:127.0.0.1:{free_port()}"))
    assert rc == 3, text


@pytest.mark.parametrize("closed", STREAMS)
def test_connect_to_a_live_server(closed: str) -> None:
    """Standard input closed: the socket must not become descriptor 0 and read itself."""
    with start_server("tcp-server", "--host", "127.0.0.1", "-p", "0", "--once") as srv:
        port = srv.port()
        rc, text = _finish(_start(closed, "connect", "127.0.0.1", str(port)))
        assert rc == 0, text
        assert srv.wait() == 0


@pytest.mark.parametrize("closed", STREAMS)
@pytest.mark.parametrize(
    "args",
    [
        ("tcp-server", "--once"),
        ("udp-server", "--once"),
        ("listen", "--recv-only"),
        ("listen",),
        ("nc", "-l"),
        ("listen", "-e", "cat"),
    ],
    ids=["tcp-server", "udp-server", "listen", "listen-stdio", "nc-l", "listen-exec"],
)
def test_servers(closed: str, args: tuple[str, ...]) -> None:
    port = free_port()
    proc = _start(closed, *args, "-p", str(port))
    try:
        if args[0] == "udp-server":
            assert _exchange_udp(port) == b"Message received"
        else:
            reply = _exchange_tcp(port, b"Hello from client")
            expected = b""  # listen's standard input is empty (the null device)
            if args[0] == "tcp-server":
                expected = b"Hello from server"
            elif "-e" in args:
                expected = b"Hello from client"  # cat's echo
            assert reply == expected
    finally:
        rc, text = _finish(proc)
    assert rc == 0, text
