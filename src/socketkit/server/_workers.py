"""Several worker processes serving one port (SO_REUSEPORT).

Strategy: the parent reserves the port by binding (without listening) a
socket with SO_REUSEPORT, so that port 0 becomes one concrete port for every
worker. It then forks N workers, each of which binds and listens on that
port with SO_REUSEPORT and runs the ordinary single-process server; the
kernel spreads new connections across the listening sockets (Linux >= 3.9,
FreeBSD with SO_REUSEPORT_LB). Each worker reports "ready" through a pipe;
when all have, the parent prints the listening line and drops its
reservation. SIGINT/SIGTERM to the parent are forwarded to every worker (by
PID) and the parent waits for them all: they shut down together.

Elsewhere (Windows, no SO_REUSEPORT, no fork) the server runs as one worker
and says so.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from .._sockets import bind_socket
from ..address import InetEndpoint
from ..errors import ListenError
from ._log import ServerLog, Stats

if TYPE_CHECKING:
    from multiprocessing.connection import Connection as Pipe

    from ._run import ServerConfig

__all__ = ["run_workers", "workers_supported"]

#: Seconds the parent waits for every worker to be listening.
READY_TIMEOUT = 30.0


def workers_supported() -> bool:
    """True where several processes can share one listening port."""
    return (
        hasattr(socket, "SO_REUSEPORT")
        and sys.platform.startswith(("linux", "freebsd"))
        and "fork" in multiprocessing.get_all_start_methods()
    )


#: ``run_stream_server``: what each worker runs (passed in by ``_run``, which
#: imports this module, so that the two do not import each other).
Serve = Callable[..., Stats]


def _worker(config: ServerConfig, log: ServerLog, serve: Serve, index: int, ready: Pipe) -> None:
    # Forget the parent's forwarding handlers: each worker stops on its own
    # SIGTERM/SIGINT (Ctrl-C reaches the whole process group).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log.label = f"worker {index}"
    try:
        serve(
            config,
            log,
            on_ready=lambda _engine: ready.send(index),
            announce=False,
        )
    except Exception as exc:
        log.warning(f"worker {index}: {exc}")
        os._exit(1)
    finally:
        ready.close()


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

    reserve = bind_socket(config.endpoint, family=config.family, reuse_port=True, listen=False)
    port = reserve.getsockname()[1]
    worker_config = replace(
        config, workers=1, reuse_port=True, endpoint=InetEndpoint(config.endpoint.host, port)
    )
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    procs = [
        ctx.Process(target=_worker, args=(worker_config, log, serve, i, sender), name=f"worker-{i}")
        for i in range(config.workers)
    ]
    stopping = False

    def forward(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for proc in procs:
            proc.start()
        sender.close()
        ready = 0
        while ready < len(procs):
            if not receiver.poll(READY_TIMEOUT):
                forward(signal.SIGTERM, None)
                raise ListenError(f"workers did not start listening within {READY_TIMEOUT:g} s")
            try:
                receiver.recv()
            except EOFError:
                raise ListenError("a worker exited before listening (see its message)") from None
            ready += 1
        reserve.close()
        log.listening(
            f"Server listening on port {port} ({len(procs)} workers)",
            address=str(worker_config.endpoint),
            workers=len(procs),
        )
        for proc in procs:
            proc.join()
        failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
        if failed and not stopping:
            log.warning(f"workers ended with errors: {', '.join(str(f) for f in failed)}")
    finally:
        reserve.close()
        receiver.close()
        for proc in procs:
            if proc.exitcode is None and proc.pid is not None:
                proc.terminate()
                proc.join(5)
        for sig, old in previous.items():
            signal.signal(sig, old)
    return Stats()
