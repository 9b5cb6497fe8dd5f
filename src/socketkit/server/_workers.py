"""Several worker processes serving one port (SO_REUSEPORT).

Strategy: the parent first binds the port *without* SO_REUSEPORT, and lets
go of it at once: that bind fails with "address in use" when another server
(with or without workers) holds the port, so two ``--workers`` servers
cannot silently share one port (SO_REUSEPORT alone would let them, for the
same user). It then reserves the port by binding (without listening) a
socket with SO_REUSEPORT, so that port 0 becomes one concrete port for every
worker. It then forks N workers, each of which binds and listens on that
port with SO_REUSEPORT and runs the ordinary single-process server; the
kernel spreads new connections across the listening sockets (Linux >= 3.9,
FreeBSD with SO_REUSEPORT_LB). Each worker reports "ready" through a pipe;
when all have, the parent prints the listening line and drops its
reservation. SIGINT/SIGTERM to the parent are forwarded to every worker (by
PID) and the parent waits for them all: they shut down together.

Workers never outlive the parent: each watches the read end of a pipe
whose only write end the parent holds. When the parent dies, however it
dies (``kill -KILL`` included), the kernel closes that end, the pipe reads
as end of file, and every worker stops gracefully as on SIGTERM. A pipe
works wherever fork does, unlike Linux's PR_SET_PDEATHSIG.

Elsewhere (Windows, no SO_REUSEPORT, no fork) the server runs as one worker
and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .._sockets import bind_socket
from ..address import InetEndpoint
from ..errors import ListenError
from ._log import ServerLog, Stats

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Pipe

    from ._engine import StreamEngine
    from ._run import ServerConfig

__all__ = ["run_workers", "workers_supported"]

#: Seconds the parent waits for every worker to be listening.
READY_TIMEOUT = 30.0


def workers_supported() -> bool:
    """True where several processes can share one listening port."""
    # multiprocessing is loaded here, not with the module: every command
    # imports the server package, few of them run workers.
    import multiprocessing

    return (
        hasattr(socket, "SO_REUSEPORT")
        and sys.platform.startswith(("linux", "freebsd"))
        and "fork" in multiprocessing.get_all_start_methods()
    )


#: ``run_stream_server``: what each worker runs (passed in by ``_run``, which
#: imports this module, so that the two do not import each other).
Serve = Callable[..., Stats]


def _worker(
    config: ServerConfig,
    log: ServerLog,
    serve: Serve,
    index: int,
    ready: Pipe,
    parent: tuple[int, int],
) -> None:
    # Forget the parent's forwarding handlers: each worker stops on its own
    # SIGTERM/SIGINT (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The parent forked with both blocked (see run_workers); a signal that
    # came meanwhile is delivered now, to this worker's own handlers.
    _unblock_stop_signals()
    parent_gone, parent_alive = parent
    os.close(parent_alive)  # the parent's end: only the parent may hold it
    log.label = f"worker {index}"

    def on_ready(engine: StreamEngine) -> None:
        loop = asyncio.get_running_loop()

        def parent_died() -> None:
            loop.remove_reader(parent_gone)
            engine.stop()

        loop.add_reader(parent_gone, parent_died)
        ready.send(index)

    try:
        serve(config, log, on_ready=on_ready, announce=False)
    except Exception as exc:
        log.warning(f"worker {index}: {exc}")
        os._exit(1)
    finally:
        ready.close()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def _unblock_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def run_workers(config: ServerConfig, log: ServerLog, serve: Serve) -> Stats:
    """Run ``config.workers`` processes on one port; return the parent's (empty) stats.

    Args:
        serve: ``run_stream_server``, run in each worker with ``workers=1``.
    """
    if not workers_supported() or not isinstance(config.endpoint, InetEndpoint):
        log.warning(
            f"{config.workers} workers: several processes on one port need SO_REUSEPORT "
            "on Linux or FreeBSD and a TCP port; running one worker"
        )
        return serve(replace(config, workers=1), log)

    # Refuse a port another server holds (see the module docstring).
    probe = bind_socket(config.endpoint, family=config.family, listen=False)
    port = probe.getsockname()[1]
    endpoint = InetEndpoint(config.endpoint.host, port)
    probe.close()
    reserve = bind_socket(endpoint, family=config.family, reuse_port=True, listen=False)
    worker_config = replace(config, workers=1, reuse_port=True, endpoint=endpoint)
    parent = os.pipe()
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(
            target=_worker,
            args=(worker_config, log, serve, i, sender, parent),
            name=f"worker-{i}",
        )
        for i in range(config.workers)
    ]
    # Set by the signal handler (only it calls set(); is_set() takes no lock).
    stopping = threading.Event()

    def forward(_signum: int, _frame: object) -> None:
        stopping.set()
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # A child starts with the parent's handlers: a SIGTERM forwarded to
        # it before it set its own would run ``forward`` there and leave it
        # serving. Forking with the signals blocked defers them until the
        # child (or, here, the parent) has its own handlers.
        _block_stop_signals()
        try:
            for proc in procs:
                proc.start()
        finally:
            _unblock_stop_signals()
        sender.close()
        ready = 0
        while ready < len(procs) and not stopping.is_set():
            if not receiver.poll(READY_TIMEOUT):
                forward(signal.SIGTERM, None)
                raise ListenError(f"workers did not start listening within {READY_TIMEOUT:g} s")
            try:
                receiver.recv()
            except EOFError:
                if stopping.is_set():  # stopped while starting: the workers ended as asked
                    break
                raise ListenError("a worker exited before listening (see its message)") from None
            ready += 1
        if stopping.is_set():
            for proc in procs:
                proc.join()
            return Stats()
        reserve.close()
        log.listening(
            f"Server listening on port {port} ({len(procs)} workers)",
            address=str(worker_config.endpoint),
            workers=len(procs),
        )
        for proc in procs:
            proc.join()
        failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
        if failed and not stopping.is_set():
            log.warning(f"workers ended with errors: {', '.join(str(f) for f in failed)}")
    finally:
        reserve.close()
        receiver.close()
        for fd in parent:
            os.close(fd)
        for proc in procs:
            if proc.exitcode is None and proc.pid is not None:
                proc.terminate()
                proc.join(5)
        for sig, old in previous.items():
            signal.signal(sig, old)
    return Stats()
