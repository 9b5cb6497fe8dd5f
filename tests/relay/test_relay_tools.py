"""Interoperability with the real tools: ncat, socat, openssl (``-m tools``).

Each test is skipped with a clear reason when its tool is missing; .ci/run
installs them from Debian packages.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import trustme
from relaysupport import (
    LOOPBACK_TIMEOUT,
    Proc,
    free_port,
    need_tool,
    run,
    running,
    sha,
    sk,
    wait_connectable,
)

pytestmark = [pytest.mark.tools, pytest.mark.timeout(90)]

PAYLOAD = os.urandom(3 << 20)


def test_socketkit_connect_to_ncat_listen() -> None:
    ncat = need_tool("ncat")
    port = free_port()
    with running([ncat, "-v", "-l", "--recv-only", "127.0.0.1", str(port)]) as lst:
        lst.wait_err(r"Listening on")
        done = run(sk("connect", "127.0.0.1", str(port)), PAYLOAD)
        assert done.returncode == 0, done.stderr
        lst.wait()
        assert sha(lst.out) == sha(PAYLOAD)


def test_ncat_connect_to_socketkit_listen_both_ways() -> None:
    ncat = need_tool("ncat")
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as lst:
        port = lst.port()
        # ncat half-closes at end of input and reads the echo to the end.
        # (Small enough to fit in the socket buffers: ncat's own loop blocks
        # on writes, so with megabytes flowing both ways it can stall itself;
        # the benchmark's ncat row shows the same.)
        small = PAYLOAD[:200_000]
        done = run([ncat, "127.0.0.1", str(port)], small, timeout=30)
        assert done.returncode == 0, done.stderr
        assert sha(done.stdout) == sha(small)
    with running(sk("listen", "-v", "127.0.0.1", "0")) as lst:
        port = lst.port()
        done = run([ncat, "--send-only", "127.0.0.1", str(port)], PAYLOAD, timeout=30)
        assert done.returncode == 0, done.stderr
        assert lst.wait() == 0
        assert sha(lst.out) == sha(PAYLOAD)


def test_socat_through_socketkit_relay_to_socat_echo() -> None:
    socat = need_tool("socat")
    echo_port = free_port()
    with running([socat, f"TCP-LISTEN:{echo_port},bind=127.0.0.1,reuseaddr,fork", "EXEC:cat"]):
        wait_connectable(echo_port)
        with running(
            sk("relay", "-v", "-k", "tcp-listen:127.0.0.1:0", f"tcp:127.0.0.1:{echo_port}")
        ) as relay:
            port = relay.port()
            done = run([socat, "-t", "30", "-", f"TCP:127.0.0.1:{port}"], PAYLOAD, timeout=40)
            assert done.returncode == 0, done.stderr
            assert sha(done.stdout) == sha(PAYLOAD)


def test_socat_client_to_socketkit_relay_unix(tmp_path: Path) -> None:
    socat = need_tool("socat")
    path = str(tmp_path / "relay.sock")
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as upstream:
        up = upstream.port()
        with running(sk("relay", "-v", f"unix-listen:{path}", f"tcp:127.0.0.1:{up}")) as relay:
            relay.wait_err("listening on unix:")
            done = run([socat, "-t", "30", "-", f"UNIX-CONNECT:{path}"], PAYLOAD, timeout=40)
            assert done.returncode == 0, done.stderr
            assert sha(done.stdout) == sha(PAYLOAD)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("tools-tls")
    ca = trustme.CA()
    server = str(tmp / "server.pem")
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(server)
    ca_file = str(tmp / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    return server, ca_file


def test_socketkit_tls_connect_to_openssl_s_server(tls_files: tuple[str, str]) -> None:
    openssl = need_tool("openssl")
    server, ca_file = tls_files
    port = free_port()
    argv = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", server, "-key", server]
    # s_server ends the session when its own stdin ends: keep that pipe open.
    proc = Proc([*argv, "-naccept", "1", "-quiet"], stdin=subprocess.PIPE)
    try:
        _wait_listening(port)  # -naccept 1: a connect probe would use up its one session
        done = run(
            sk("connect", "-q", "1", "--tls", "--ca-file", ca_file, "localhost", str(port)),
            b"hello from socketkit\n",
        )
        assert done.returncode == 0, done.stderr
        proc.wait_out(b"hello from socketkit\n")
    finally:
        proc.close()


def _wait_listening(port: int) -> None:
    """Wait for a TCP listener without connecting to it (ss), for one-shot servers."""
    deadline = time.monotonic() + LOOPBACK_TIMEOUT
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        if f"127.0.0.1:{port} " in out:
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listening on port {port}")


def test_openssl_s_client_to_socketkit_tls_listen(tls_files: tuple[str, str]) -> None:
    openssl = need_tool("openssl")
    server, ca_file = tls_files
    with running(
        sk("listen", "-v", "--tls", "--cert", server, "127.0.0.1", "0", "-c", "head -n 1")
    ) as lst:
        port = lst.port()
        done = run(
            [
                openssl,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "localhost",
                "-verify_hostname",
                "localhost",
                "-CAfile",
                ca_file,
                "-verify_return_error",
                "-quiet",
                "-ign_eof",
            ],
            b"line one\nline two\n",
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"line one\n"


def test_socketkit_rejects_openssl_server_for_wrong_host(tls_files: tuple[str, str]) -> None:
    openssl = need_tool("openssl")
    server, _ca_file = tls_files
    port = free_port()
    with running(
        [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", server, "-key", server],
        stdin=subprocess.PIPE,
    ):
        _wait_listening(port)
        done = run(sk("connect", "--tls", "localhost", str(port)))
    err = done.stderr.decode()
    assert done.returncode == 3
    assert err.count("\n") == 1
    assert "certificate verify failed" in err
