"""Exec: a program on a connection, inetd style (the lecture's "a socket is a file descriptor").

On POSIX the program gets the connected socket itself as its standard
input and output (``subprocess`` dup2s it onto fds 0 and 1), so it talks to
the peer with no copy through us. For an accepted connection the engine's
transport keeps its descriptor, paused, until the program exits, so the
connection counts against ``--max-conns`` while the program runs and ends
(FIN) when it exits. Where a socket cannot be a child's standard input
(Windows), the connection is TLS (the program would see ciphertext), the
link must see the bytes (``--crlf``, the hex dump, ``-o``), or the loop has
already read the client's first bytes, the program gets pipes and a link
copies between them and the connection. Either way the program finds the
two addresses in ncat's ``NCAT_*`` environment variables.

Every child is waited for without a thread where the platform allows
(Linux: a pidfd the loop watches), else in the loop's executor; its exit
status is logged. A link that fails kills its program.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SettingError, UnsupportedError
from ..server import ServerLog
from ._link import Link, PendingSink, SideProtocol

__all__ = ["ExecCommand", "open_exec", "run_exec_on_socket", "wait_exit"]


@dataclass(frozen=True, slots=True)
class ExecCommand:
    """A program to run per connection: argv (``-e``) or a shell line (``-c``)."""

    argv: tuple[str, ...]
    shell: bool = False

    @classmethod
    def program(cls, text: str | Sequence[str]) -> ExecCommand:
        argv = tuple(shlex.split(text)) if isinstance(text, str) else tuple(text)
        if not argv:
            raise SettingError("exec: empty command")
        return cls(argv)

    @classmethod
    def shell_line(cls, text: str) -> ExecCommand:
        if not text.strip():
            raise SettingError("exec: empty command")
        if os.name == "nt":
            return cls(("cmd.exe", "/c", text), shell=True)
        return cls(("/bin/sh", "-c", text), shell=True)

    def check(self) -> None:
        """Fail early (before listening) when the program cannot be found."""
        prog = self.argv[0]
        if os.sep in prog or (os.altsep and os.altsep in prog):
            if not os.access(prog, os.X_OK):
                raise SettingError(f"exec: cannot run {prog!r}: not an executable file")
        elif shutil.which(prog) is None:
            raise SettingError(f"exec: cannot run {prog!r}: not found on PATH")

    def start(self, **popen: Any) -> subprocess.Popen[bytes]:
        """Start the program (``popen``: its standard streams).

        Raises:
            SettingError: it cannot be started.
        """
        try:
            return subprocess.Popen(self.argv, close_fds=True, **popen)
        except OSError as exc:
            raise SettingError(f"exec: cannot run {self}: {exc.strerror or exc}") from exc

    def __str__(self) -> str:
        return self.argv[-1] if self.shell else shlex.join(self.argv)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without blocking the loop; return its status."""
    loop = asyncio.get_running_loop()
    pidfd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(proc.pid)
    if pidfd is None:
        return await loop.run_in_executor(None, proc.wait)
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


def log_exit(log: ServerLog, command: ExecCommand, peer: str, status: int) -> None:
    how = f"exited with status {status}" if status >= 0 else f"killed by signal {-status}"
    log.event(
        f"exec: {command} for {peer} {how}",
        "exec",
        status == 0,
        peer=peer,
        status=status,
    )


def ncat_environment(conn: Any) -> dict[str, str]:
    """The environment of a program run on a connection: ours plus ncat's
    ``NCAT_REMOTE_ADDR``, ``NCAT_REMOTE_PORT``, ``NCAT_LOCAL_ADDR``,
    ``NCAT_LOCAL_PORT`` and ``NCAT_PROTO`` (TCP or UDP), so that scripts
    written for ``ncat -e`` run unchanged.

    Args:
        conn: the connection, as a socket or as a transport (``get_extra_info``:
            socket, sockname, peername). The variables are set for IP only.
    """
    env = dict(os.environ)
    local: Any = None
    remote: Any = None
    if isinstance(conn, socket.socket):
        sock: Any = conn
        with contextlib.suppress(OSError):
            local, remote = conn.getsockname(), conn.getpeername()
    elif hasattr(conn, "get_extra_info"):
        sock = conn.get_extra_info("socket")
        local, remote = conn.get_extra_info("sockname"), conn.get_extra_info("peername")
    else:
        return env
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return env
    if isinstance(remote, tuple):
        env["NCAT_REMOTE_ADDR"], env["NCAT_REMOTE_PORT"] = remote[0], str(remote[1])
    if isinstance(local, tuple):
        env["NCAT_LOCAL_ADDR"], env["NCAT_LOCAL_PORT"] = local[0], str(local[1])
    env["NCAT_PROTO"] = "UDP" if sock.type == socket.SOCK_DGRAM else "TCP"
    return env


def _handover_fd(conn: Any, link: Link) -> int | None:
    """The accepted connection's descriptor, when the program can have it as stdin/stdout."""
    if os.name == "nt" or conn is None or conn.transport is None:
        return None
    if link.options.transform is not None or link.options.observer is not None:
        # --crlf, the hex dump and -o see every byte: the program gets pipes.
        return None
    transport = conn.transport
    if transport.get_extra_info("ssl_object") is not None:
        return None
    if isinstance(conn.sink, PendingSink) and conn.sink.chunks:
        # The loop read the client's first bytes before it could be paused:
        # they are ours now, so the program gets them through a pipe.
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    return int(sock.fileno())


async def open_exec(
    command: ExecCommand, log: ServerLog, link: Link, index: int, conn: Any = None
) -> None:
    """Run ``command`` as side ``index`` of ``link`` until it exits (see the module doc)."""
    peer = link.sides[1 - index].name
    fd = _handover_fd(conn, link)
    other = link.sides[1 - index]
    env = ncat_environment(other.source if other.source is not None else other.sink)
    if fd is not None:
        os.set_blocking(fd, True)  # the program expects a blocking stdin and stdout
        proc = command.start(stdin=fd, stdout=fd, env=env)
        log.event(f"exec: started {command} (pid {proc.pid}) for {peer}", "exec", True)
        try:
            status = await wait_exit(proc)
        except BaseException:
            proc.kill()
            raise
        log_exit(log, command, peer, status)
        link.finish("closed")
        return
    proc = command.start(stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
    log.event(f"exec: started {command} (pid {proc.pid}, through pipes) for {peer}", "exec", True)
    loop = asyncio.get_running_loop()
    reader = SideProtocol(link, index, "source", counter=conn)
    writer = SideProtocol(link, index, "sink", counter=conn)
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        source, _ = await loop.connect_read_pipe(lambda: reader, proc.stdout)
        sink, _ = await loop.connect_write_pipe(lambda: writer, proc.stdin)
    except BaseException:
        proc.kill()
        raise
    link.attach(index, source, sink, reader, sink_protocol=writer)
    task = loop.create_task(_reap(proc, command, log, peer, link))
    _REAPERS.add(task)
    task.add_done_callback(_REAPERS.discard)


#: Reaper tasks in flight (asyncio keeps only weak references to tasks).
_REAPERS: set[asyncio.Task[None]] = set()


async def _reap(
    proc: subprocess.Popen[bytes], command: ExecCommand, log: ServerLog, peer: str, link: Link
) -> None:
    done = link.wait()
    exited = asyncio.ensure_future(wait_exit(proc))
    waiting: list[asyncio.Future[Any]] = [exited, done]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not exited.done() and done.done() and done.result().error is not None:
        proc.kill()  # the connection failed: the program has nobody to talk to
    status = await exited
    log_exit(log, command, peer, status)


def run_exec_on_socket(command: ExecCommand, sock: socket.socket, log: ServerLog, peer: str) -> int:
    """``connect -e``: the program gets the connected socket; return its exit status."""
    try:
        if os.name == "nt":
            raise UnsupportedError(
                "exec on a connection needs POSIX (a socket cannot be a child's stdin)"
            )
        proc = command.start(stdin=sock.fileno(), stdout=sock.fileno(), env=ncat_environment(sock))
    finally:
        sock.close()  # the child holds the connection now
    log.event(f"exec: started {command} (pid {proc.pid}) for {peer}", "exec", True)
    status = proc.wait()
    log_exit(log, command, peer, status)
    return status
