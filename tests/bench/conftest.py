"""A bench server in a thread on a loopback port 0, for each test that asks."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from socketkit.bench import BenchServer

#: Seconds to wait for the server thread to end.
JOIN_TIMEOUT = 10.0


@pytest.fixture
def bench_port() -> Iterator[int]:
    server = BenchServer.bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()  # bound and listening already: no readiness wait needed
    try:
        yield server.port
    finally:
        server.stop()
        thread.join(JOIN_TIMEOUT)
