"""What ncat users type, and what they expect of it (subprocesses, loopback, port 0)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from relaysupport import run, sk

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
