"""The lecture's clients: addresses, timeouts and values as a user types them."""

from __future__ import annotations

import pytest

from helpers import run_cli, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_wait_zero_means_no_time_limit(kind: str) -> None:
    """``-w 0`` is 'no limit' for every command (connect and relay read it so too)."""
    with start_server(f"{kind}-server", "--host", "127.0.0.1", "-p", "0", "--once") as srv:
        result = run_cli(f"{kind}-client", "-w", "0", "-p", str(srv.port()))
        assert result.code == 0, result.err
        reply = "Hello from server" if kind == "tcp" else "Message received"
        assert result.out == f"Received: {reply}\n"
        assert srv.wait() == 0
