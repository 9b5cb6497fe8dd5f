"""Shared bits of the reference servers: argument parsing and the readiness line.

Every reference server takes ``--host`` (default 127.0.0.1) and ``--port``
(default 0: the kernel picks) and prints ``listening on port N`` on standard
output, flushed, once its socket is bound and listening.  The benchmark runner
waits for that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys

BACKLOG = 4096
READ_SIZE = 256 * 1024


def parse_args(
    description: str, *, uvloop_flag: bool = False, udp_flag: bool = False
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    if uvloop_flag:
        parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    if udp_flag:
        parser.add_argument("--udp", action="store_true", help="UDP echo instead of TCP")
    return parser.parse_args()


def prepare() -> None:
    """Raise the fd limit to the hard limit; exit quietly on SIGTERM."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def announce(port: int) -> None:
    print(f"listening on port {port}", flush=True)


def install_uvloop() -> None:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        print("uvloop is not installed", file=sys.stderr)
        sys.exit(3)
    uvloop.install()
