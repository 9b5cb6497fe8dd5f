"""socketkit servers behind a real HAProxy: traffic spread, real client addresses.

HAProxy (Debian package, installed by .ci/run) runs on loopback only, started
and stopped by the test, in front of two socketkit servers that read the
PROXY protocol (one gets v1, the other v2). The client connects from
127.0.0.2 so that the address the servers report can only come from the
PROXY header: HAProxy itself connects to them from 127.0.0.1.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import pytest

from helpers import LOOPBACK_TIMEOUT, Proc, free_port, start_server, wait_connectable

pytestmark = [
    pytest.mark.tools,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed"),
]

CLIENTS = 10


def test_haproxy_spreads_load_and_servers_see_real_clients(tmp_path: Path) -> None:
    args = ["tcp-server", "--proxy-protocol", "-v", "--host", "127.0.0.1", "-p", "0"]
    with start_server(*args) as one, start_server(*args) as two:
        p1, p2 = one.port(), two.port()
        front = free_port()  # HAProxy cannot report a port it chose
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            f"""
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{front}
    default_backend socketkit
backend socketkit
    balance roundrobin
    server one 127.0.0.1:{p1} send-proxy
    server two 127.0.0.1:{p2} send-proxy-v2
"""
        )
        # Ended (its process group killed) when the block ends, whatever happened.
        with Proc(["haproxy", "-db", "-f", str(config)]):
            wait_connectable(front)
            # The readiness probe above went through HAProxy too; count from here.
            for _ in range(CLIENTS):
                with socket.socket() as s:
                    s.settimeout(LOOPBACK_TIMEOUT)
                    s.bind(("127.0.0.2", 0))
                    s.connect(("127.0.0.1", front))
                    s.sendall(b"Hello from client\n")
                    assert s.recv(100) == b"Hello from server\n"
        assert one.terminate() == 0
        assert two.terminate() == 0
    seen = [re.findall(r"^127\.0\.0\.2:\d+: connected$", srv.err, re.M) for srv in (one, two)]
    assert len(seen[0]) + len(seen[1]) == CLIENTS, (one.err, two.err)
    assert len(seen[0]) >= CLIENTS // 2 - 1
    assert len(seen[1]) >= CLIENTS // 2 - 1
    for srv in (one, two):
        assert "Traceback" not in srv.err
