"""Serving: the accept loop (one connection, or many with -k/fork), exec, broker.

The accept loop runs in the calling (main) thread, so Ctrl-C and SIGTERM
reach it; with ``keep_open`` each connection is handled in its own daemon
thread, at most ``max_conns`` at once (further clients wait in the listen
backlog, as with the server engine). Access control is checked right after
accept: a refused peer is closed at once and logged, before a byte is read
or written (and before a TLS handshake).

Exec (inetd style, the lecture's "a socket is a file descriptor"): on
POSIX the program gets the connected socket itself as its standard input
and output (``subprocess`` dup2s it onto fds 0 and 1), so it talks to the
peer with no copy through us; the parent closes its own copy at once, so the
connection ends when the program exits. Where a socket cannot be a child's
standard input (Windows), or the connection is TLS, the program gets pipes
and the pump copies. Every child is waited for by the thread that started
it (no zombies) and its exit status is logged.

Broker (chat) mode: what each client sends is written to every other
client. Writes to one client block the sender's thread while that client is
slow, so memory stays bounded (one buffer per client).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..access import AccessList
from ..errors import SettingError, SocketkitError
from ._channels import Channel, PipeChannel, SocketChannel, StdioChannel
from ._open import Accepted, Listener, Log
from ._pump import BUFFER_SIZE, OutputClosedError, PumpOptions, pump

__all__ = ["ExecCommand", "Hub", "run_exec", "serve"]

#: Seconds to wait before accepting again after running out of descriptors
#: (doubling up to the maximum while it lasts), as the server engine does.
ACCEPT_BACKOFF = 0.1
ACCEPT_BACKOFF_MAX = 1.0
#: accept(2) errnos meaning "out of resources": back off, don't spin.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def serve(
    listener: Listener,
    handler: Callable[[Accepted], None],
    *,
    keep_open: bool,
    access: AccessList,
    log: Log,
    max_conns: int | None = None,
) -> None:
    """Accept connections and hand each to ``handler``.

    Without ``keep_open``: one connection; the listener is closed as soon as
    it is accepted (netcat's behaviour) and ``handler`` runs in this thread,
    its errors propagating. With it: forever, a daemon thread per
    connection, errors logged per connection.
    """
    slots = threading.BoundedSemaphore(max_conns) if max_conns else None
    backoff = ACCEPT_BACKOFF
    while True:
        if slots is not None:
            slots.acquire()
        try:
            acc = listener.accept()
        except SocketkitError as exc:
            if slots is not None:
                slots.release()
            if not keep_open or exc.errno not in _RESOURCE_ERRNOS:
                raise
            # Out of descriptors (or memory): the client stays in the backlog
            # and the listener stays readable, so retrying at once would spin.
            # Wait, longer each time, while the connections we have finish.
            log.warn(f"{exc}; pausing accepts for {backoff:g} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
            continue
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        backoff = ACCEPT_BACKOFF
        refusal = access.check(acc.addr)
        if refusal is not None:
            log.warn(f"refused {acc.peer}: {refusal}")
            if not listener.datagram:
                acc.close()
            if slots is not None:
                slots.release()
            continue
        log.info(f"connection from {acc.peer}")
        if not keep_open:
            if not listener.datagram:
                listener.close()
            handler(acc)
            return
        thread = threading.Thread(
            target=_handle_logged,
            args=(handler, acc, log, slots),
            daemon=True,
            name=f"conn {acc.peer}",
        )
        thread.start()


def _handle_logged(
    handler: Callable[[Accepted], None],
    acc: Accepted,
    log: Log,
    slots: threading.BoundedSemaphore | None,
) -> None:
    try:
        handler(acc)
    except SocketkitError as exc:
        log.warn(f"{acc.peer}: {exc}")
    except Exception:  # a bug: show it in full, keep serving the others
        log.warn(f"{acc.peer}: internal error\n{traceback.format_exc().rstrip()}")
    finally:
        with contextlib.suppress(OSError):
            acc.sock.close()
        if slots is not None:
            slots.release()


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

    def __str__(self) -> str:
        return self.argv[-1] if self.shell else shlex.join(self.argv)


def run_exec(command: ExecCommand, channel: Channel, log: Log, peer: str) -> int:
    """Run ``command`` on a connection until it exits; return its exit status.

    The channel is closed when this returns.
    """
    try:
        if isinstance(channel, SocketChannel) and os.name != "nt":
            fd = channel.sock.fileno()
            try:
                proc = subprocess.Popen(command.argv, stdin=fd, stdout=fd, close_fds=True)
            except OSError as exc:
                raise SettingError(f"exec: cannot run {command}: {exc.strerror or exc}") from exc
            channel.close()  # the child holds the connection now
            log.info(f"exec: started {command} (pid {proc.pid}) for {peer}")
            status = proc.wait()
        else:
            try:
                proc = subprocess.Popen(
                    command.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
                )
            except OSError as exc:
                raise SettingError(f"exec: cannot run {command}: {exc.strerror or exc}") from exc
            log.info(f"exec: started {command} (pid {proc.pid}, through pipes) for {peer}")
            pipes = PipeChannel(proc, f"exec {command}")
            try:
                pump(channel, pipes)
            finally:
                pipes.close()
            status = proc.wait()
    finally:
        channel.close()
    how = f"exited with status {status}" if status >= 0 else f"killed by signal {-status}"
    if status == 0:
        log.info(f"exec: {command} for {peer} {how}")
    else:
        log.warn(f"exec: {command} for {peer} {how}")
    return status


class Hub:
    """Many connections and (optionally) standard I/O, for ``listen -k`` and ``--broker``.

    Without ``broker``: what clients send goes to standard output, what
    standard input gives goes to every client (ncat -l -k). With ``broker``:
    what a client sends goes to every *other* client, and standard I/O is
    not used.
    """

    def __init__(
        self,
        log: Log,
        *,
        broker: bool,
        options: PumpOptions,
        stdio: StdioChannel | None = None,
    ) -> None:
        self.log = log
        self.broker = broker
        self.options = options
        self.stdio = None if broker else stdio
        self._members: dict[Channel, threading.Lock] = {}
        self._lock = threading.Lock()
        self._stdout_lock = threading.Lock()

    def start_stdin(self) -> None:
        """Read standard input in a daemon thread and send it to every client."""
        if self.stdio is None or not self.options.a_to_b:
            return
        threading.Thread(target=self._stdin_loop, daemon=True, name="stdin").start()

    def _stdin_loop(self) -> None:
        assert self.stdio is not None
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        while True:
            try:
                n = self.stdio.read_into(view)
            except OSError:
                return
            if n == 0:
                with self._lock:
                    members = list(self._members)
                for m in members:
                    m.shutdown_write()
                return
            data = bytes(view[:n])
            if self.options.transform is not None:
                data = self.options.transform(data)
            if self.options.observer is not None:
                self.options.observer(">", data)
            self._broadcast(data, exclude=None)

    def _broadcast(self, data: bytes, exclude: Channel | None) -> None:
        with self._lock:
            members = [(m, lk) for m, lk in self._members.items() if m is not exclude]
        for member, lock in members:
            try:
                with lock:
                    member.write_all(data)
            except OSError as exc:
                self.log.info(f"{member.name}: dropped ({exc.strerror or exc})")
                member.abort()

    def serve_member(self, channel: Channel) -> None:
        """Handle one client until it ends (called in the client's thread)."""
        with self._lock:
            self._members[channel] = threading.Lock()
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        try:
            while True:
                try:
                    n = channel.read_into(view)
                except OSError as exc:
                    self.log.info(f"{channel.name}: {exc.strerror or exc}")
                    return
                if n == 0:
                    self.log.info(f"{channel.name}: closed")
                    return
                data = bytes(view[:n])
                if self.options.observer is not None:
                    self.options.observer("<", data)
                if self.broker:
                    self._broadcast(data, exclude=channel)
                elif self.stdio is not None and self.options.b_to_a:
                    with self._stdout_lock:
                        try:
                            self.stdio.write_all(data)
                        except BrokenPipeError:
                            raise OutputClosedError("standard output closed") from None
        finally:
            with self._lock:
                self._members.pop(channel, None)
            channel.close()
