"""``--trace`` tells the truth: its lines match what strace saw, call by call.

Each test runs a command with ``--trace`` under ``strace -f -e
trace=network,close`` and compares:
- per thread, the traced lines appear in strace's output for that thread in
  the same order, with the same system call, descriptor and outcome (return
  value or errno). Across threads only strace knows the true interleaving:
  a line is printed after its call returns;
- every traced line is matched by exactly one strace call, and between a
  traced socket's creation and its close strace shows no call on that
  descriptor that the trace left out. Calls on descriptors the program made
  elsewhere (asyncio's self-pipe, glibc's resolver) are not sockets of the
  library and are skipped; so are getsockname, getpeername and getsockopt,
  which the trace does not claim to show.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import LOOPBACK_TIMEOUT, Proc, Server, socketkit_argv

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="strace is Linux-only"),
]

#: System calls the trace claims to show (Linux names).
CLAIMED = {
    "socket",
    "setsockopt",
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "sendto",
    "recvfrom",
    "shutdown",
    "close",
}


@dataclass(frozen=True)
class Call:
    name: str
    fd: int
    outcome: str  # "17", "0", or an errno name like "EAGAIN"
    line: str
    tid: int = 0  # 0 in a trace line: the main thread

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.name, self.fd, self.outcome)


_STRACE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(?:\s+(E\w+))?")
_TRACE = re.compile(
    r"^\[trace\] (?:pid \d+ )?(?:tid (\d+) )?fd (-?\d+) (\w+)\((.*)\) = (-1 (E\w+)|\d+)"
)
_SYSCALL = {"accept": "accept4", "send": "sendto", "recv": "recvfrom"}


def _join_unfinished(lines: list[str]) -> list[str]:
    """Glue ``<unfinished ...>`` / ``<... resumed>`` halves back together."""
    pending: dict[str, str] = {}
    out = []
    for line in lines:
        m = re.match(r"^(\d+)\s+(.*) <unfinished \.\.\.>$", line)
        if m:
            pending[m.group(1)] = f"{m.group(1)} {m.group(2)}"
            out.append("")  # keep the call where it started
            pending[m.group(1) + "#"] = str(len(out) - 1)
            continue
        m = re.match(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$", line)
        if m and m.group(1) in pending:
            index = int(pending.pop(m.group(1) + "#"))
            out[index] = pending.pop(m.group(1)) + m.group(2)
            continue
        out.append(line)
    return [line for line in out if line]


def parse_strace(text: str) -> list[Call]:
    calls = []
    for line in _join_unfinished(text.splitlines()):
        m = _STRACE.match(line)
        if not m or m.group(2) not in CLAIMED:
            continue
        name, args, ret, errname = m.group(2), m.group(3), int(m.group(4)), m.group(5)
        fd = ret if name == "socket" else int(args.split(",")[0])
        outcome = errname if ret == -1 and errname else str(ret)
        if name == "socket":  # the family tells a library socket from glibc's netlink one
            outcome += " " + args.split(",")[0]
        tid = int(m.group(1))
        calls.append(Call("accept4" if name == "accept" else name, fd, outcome, line, tid))
    return calls


def parse_trace(text: str) -> list[Call]:
    calls = []
    for line in text.splitlines():
        m = _TRACE.match(line)
        if not m:
            continue
        name = _SYSCALL.get(m.group(3), m.group(3))
        outcome = m.group(6) or m.group(5)
        if name == "connect" and outcome == "0" and "EINPROGRESS" in m.group(4):
            # A socket with a timeout is non-blocking: connect(2) says
            # EINPROGRESS and Python waits (the traced line says so).
            outcome = "EINPROGRESS"
        if name == "socket":
            outcome += " " + m.group(4).split(",")[0]
        calls.append(Call(name, int(m.group(2)), outcome, line, int(m.group(1) or 0)))
    return calls


def check_matches(ours: list[Call], theirs: list[Call]) -> None:
    """Fail unless ``ours`` is strace's record of our descriptors (see module doc)."""
    assert ours, "the command printed no trace lines"
    main_tid = next((c.tid for c in theirs), 0)
    # Per thread: the same calls in the same order.
    for tid in {c.tid or main_tid for c in ours}:
        mine = [c for c in ours if (c.tid or main_tid) == tid]
        seen = iter(c for c in theirs if c.tid == tid or (c.tid == 0 and tid == main_tid))
        for call in mine:
            assert any(other.key == call.key for other in seen), (
                f"traced line not seen by strace (in order, thread {tid}): {call.line!r}"
            )
    # Globally: each traced line matches one strace call; no untraced call on our sockets.
    pending = Counter(c.key for c in ours)
    tracked: set[int] = set()
    for call in theirs:
        if call.name == "socket":
            if pending[call.key] > 0:  # one of the library's sockets is born
                pending[call.key] -= 1
                tracked.add(call.fd)
            continue
        if call.fd not in tracked:
            continue  # not a socket of the library (a file, asyncio's self-pipe)
        assert pending[call.key] > 0, f"strace saw a call the trace did not show: {call.line!r}"
        pending[call.key] -= 1
        if call.name == "accept4" and call.outcome.isdigit():
            tracked.add(int(call.outcome))
        elif call.name == "close":
            tracked.discard(call.fd)
    missing = [key for key, n in pending.items() if n > 0]
    assert not missing, f"traced lines not seen by strace: {missing}"
    assert not tracked, f"descriptors traced but never closed: {tracked}"


def _strace_works() -> bool:
    probe = subprocess.run(
        ["strace", "-f", "-o", os.devnull, "true"], capture_output=True, timeout=LOOPBACK_TIMEOUT
    )
    return probe.returncode == 0


def _strace_argv(log: Path, *argv: str) -> list[str]:
    return ["strace", "-f", "-qq", "-s", "64", "-e", "trace=network,close", "-o", str(log), *argv]


def _run_traced(log: Path, *argv: str, stdin: str | None = None) -> tuple[str, list[Call]]:
    """Run ``argv`` under strace; check it succeeded; its stdout and its trace lines."""
    proc = subprocess.run(
        _strace_argv(log, *argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=LOOPBACK_TIMEOUT * 2,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, parse_trace(proc.stderr)


@pytest.fixture
def strace_log(tmp_path: Path) -> Path:
    if not _strace_works():
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    return tmp_path / "strace.log"


def _plain_lecture_server(conn: socket.socket) -> None:
    conn.recv(1023)
    conn.sendall(b"Hello from server")


def _echo(conn: socket.socket) -> None:
    while data := conn.recv(1024):
        conn.sendall(data)


@contextmanager
def _upstream(serve: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server, in a thread, that gives one client to ``serve``; yields its port."""

    def accept_one(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(LOOPBACK_TIMEOUT)
            serve(conn)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(LOOPBACK_TIMEOUT)
        thread = threading.Thread(target=accept_one, args=(listener,))
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            thread.join(LOOPBACK_TIMEOUT)


def test_tcp_client_trace_matches_strace(strace_log: Path) -> None:
    with _upstream(_plain_lecture_server) as port:
        out, ours = _run_traced(
            strace_log, *socketkit_argv("tcp-client", "-p", str(port), "--trace")
        )
    assert out == "Received: Hello from server\n"  # stdout unchanged by --trace
    assert [c.name for c in ours] == [
        "socket",
        "connect",
        "setsockopt",
        "sendto",
        "shutdown",
        "recvfrom",
        "recvfrom",
        "close",
    ]
    check_matches(ours, parse_strace(strace_log.read_text()))


def test_udp_client_trace_matches_strace(strace_log: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(LOOPBACK_TIMEOUT)

        def answer() -> None:
            _, addr = server.recvfrom(1023)
            server.sendto(b"Message received", addr)

        thread = threading.Thread(target=answer)
        thread.start()
        port = server.getsockname()[1]
        proc = subprocess.run(
            _strace_argv(strace_log, *socketkit_argv("udp-client", "-p", str(port), "--trace")),
            capture_output=True,
            text=True,
            timeout=LOOPBACK_TIMEOUT * 2,
        )
        thread.join(LOOPBACK_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Received: Message received\n"
    check_matches(parse_trace(proc.stderr), parse_strace(strace_log.read_text()))


def test_tcp_server_trace_matches_strace(strace_log: Path) -> None:
    argv = _strace_argv(
        strace_log, *socketkit_argv("tcp-server", "--host", "127.0.0.1", "-p", "0", "--once")
    )
    server = Server([*argv, "--trace"])
    try:
        port = server.port()
        with socket.create_connection(("127.0.0.1", port), timeout=LOOPBACK_TIMEOUT) as client:
            client.sendall(b"Hello from client")
            client.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := client.recv(1024):
                reply += chunk
        assert reply == b"Hello from server"
        assert server.wait() == 0
    finally:
        server.close()
    ours = parse_trace(server.err)
    names = [c.name for c in ours]
    assert names[:4] == ["socket", "setsockopt", "bind", "listen"]
    assert "accept4" in names
    assert "sendto" in names
    assert "bind(127.0.0.1:0; port 0" in ours[2].line
    check_matches(ours, parse_strace(strace_log.read_text()))


def test_connect_command_trace_matches_strace(strace_log: Path) -> None:
    """The netcat-like ``connect``: data copied by the relay pump, not spliced."""
    with _upstream(_echo) as port:
        argv = socketkit_argv("connect", "127.0.0.1", str(port), "--trace")
        out, ours = _run_traced(strace_log, *argv, stdin="ping\n")
    assert out == "ping\n"
    names = [c.name for c in ours]
    assert "sendto" in names
    assert "recvfrom" in names
    assert "shutdown" in names
    check_matches(ours, parse_strace(strace_log.read_text()))


def test_relay_trace_matches_strace(strace_log: Path) -> None:
    """``relay``: a listener, an accepted client, an outgoing connection, the pump."""
    with _upstream(_echo) as up:
        argv = socketkit_argv(
            "relay", "-v", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{up}", "--trace"
        )
        with Proc(_strace_argv(strace_log, *argv)) as relay:
            port = int(relay.search(r"listening on port (\d+)", "err").group(1))
            with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as client:
                client.settimeout(LOOPBACK_TIMEOUT)
                client.sendall(b"ping\n")
                client.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := client.recv(1024):
                    reply += chunk
            assert reply == b"ping\n"
            assert relay.wait() == 0, relay.err_bytes
            err = relay.err_bytes.decode("utf-8", "replace")
    ours = parse_trace(err)
    names = [c.name for c in ours]
    assert names[:4] == ["socket", "setsockopt", "bind", "listen"]
    assert "accept4" in names
    assert "connect" in names
    assert "shutdown" in names
    check_matches(ours, parse_strace(strace_log.read_text()))


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux: from /proc, by parent id)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_udp_fork_relay_trace_matches_strace(strace_log: Path) -> None:
    """``relay udp-listen:P,fork udp:...``: batches (recvmmsg/sendmmsg) bypass the
    socket objects, so a traced relay keeps one recvfrom/sendto per datagram."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
        up.bind(("127.0.0.1", 0))
        up.settimeout(LOOPBACK_TIMEOUT)
        argv = socketkit_argv(
            "relay",
            "-v",
            "udp-listen:127.0.0.1:0,fork",
            f"udp:127.0.0.1:{up.getsockname()[1]}",
            "--trace",
        )
        with Proc(_strace_argv(strace_log, *argv)) as relay:
            port = int(relay.search(r"listening (?:\w+ )?on port (\d+)", "err").group(1))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(LOOPBACK_TIMEOUT)
                for message in (b"ping", b"pong!"):
                    client.sendto(message, ("127.0.0.1", port))
                    data, addr = up.recvfrom(100)
                    assert data == message
                    up.sendto(data.upper(), addr)
                    assert client.recv(100) == message.upper()
            (pid,) = _children(relay.proc.pid)  # strace's child: the relay
            os.kill(pid, signal.SIGTERM)
            assert relay.wait() == 0, relay.err_bytes
            err = relay.err_bytes.decode("utf-8", "replace")
    ours = parse_trace(err)
    names = Counter(c.name for c in ours)
    # Per datagram: recvfrom on the listening socket, send on the upstream,
    # recvfrom there, sendto back (each read also ends with one EAGAIN).
    assert names["sendto"] >= 4, err
    assert names["recvfrom"] >= 4, err
    strace_text = strace_log.read_text()
    assert "recvmmsg(" not in strace_text
    assert "sendmmsg(" not in strace_text
    check_matches(ours, parse_strace(strace_text))


#: An asyncio client on the library's ``aio`` layer, traced (argv[1]: the port).
_AIO_CLIENT = """
import asyncio, sys
from socketkit import aio
from socketkit.trace import tracing

async def main(port):
    conn = await aio.connect(f"127.0.0.1:{port}", connect_timeout=10, timeout=10)
    async with conn:
        await conn.send_all(b"Hello from client")
        await conn.shutdown_write()
        reply = b""
        while chunk := await conn.receive_some():
            reply += chunk
    print("Received:", reply.decode())

with tracing(sys.stderr):
    asyncio.run(main(int(sys.argv[1])))
"""


def test_aio_connect_trace_matches_strace(strace_log: Path, tmp_path: Path) -> None:
    """``aio.connect`` makes its socket through the seam: socket and connect are traced."""
    script = tmp_path / "aio_client.py"
    script.write_text(_AIO_CLIENT)
    with _upstream(_plain_lecture_server) as port:
        out, ours = _run_traced(strace_log, sys.executable, str(script), str(port))
    assert out == "Received: Hello from server\n"
    names = [c.name for c in ours]
    assert names[:2] == ["socket", "connect"]
    assert ours[1].outcome == "EINPROGRESS"  # a non-blocking connect, completed by the loop
    assert "sendto" in names
    assert "shutdown" in names
    assert "recvfrom" in names
    assert names[-1] == "close"
    check_matches(ours, parse_strace(strace_log.read_text()))
