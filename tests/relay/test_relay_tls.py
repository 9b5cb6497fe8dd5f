"""TLS in connect, listen and relay, with trustme certificates (no external tools)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import trustme
from relaysupport import run, running, sha, sk

pytestmark = pytest.mark.timeout(60)


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.dir = tmp
        self.ca_file = str(tmp / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.server = self.issue("server.pem", "localhost", "127.0.0.1")

    def issue(self, name: str, *hosts: str, **kwargs: object) -> str:
        cert = self.ca.issue_cert(*hosts, **kwargs)  # type: ignore[arg-type]
        path = str(self.dir / name)
        cert.private_key_and_cert_chain_pem.write_to_path(path)
        return path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


def test_tls_connect_listen_half_close(certs: Certs) -> None:
    with running(
        sk("listen", "-v", "--tls", "--cert", certs.server, "127.0.0.1", "0", "-e", "sort")
    ) as lst:
        port = lst.port()
        done = run(
            sk("connect", "--tls", "--ca-file", certs.ca_file, "localhost", str(port)), b"b\nc\na\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"a\nb\nc\n"


def test_tls_binary_through_relay(certs: Certs) -> None:
    payload = os.urandom(2_000_000)
    with running(sk("listen", "-v", "127.0.0.1", "0", "-e", "cat")) as upstream:
        up = upstream.port()
        with running(
            sk(
                "relay",
                "-v",
                "--cert",
                certs.server,
                "tls-listen:127.0.0.1:0",
                f"tcp:127.0.0.1:{up}",
            )
        ) as relay:
            port = relay.port()
            done = run(
                sk("connect", "--tls", "--ca-file", certs.ca_file, "localhost", str(port)), payload
            )
            assert done.returncode == 0, done.stderr
            assert len(done.stdout) == len(payload), (done.stderr, relay.err_text)
            assert sha(done.stdout) == sha(payload)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("wrong-host", "hostname mismatch"),
        ("unknown-ca", "unknown CA"),
        ("expired", "certificate has expired"),
    ],
)
def test_tls_verification_failures_are_one_line(certs: Certs, case: str, needle: str) -> None:
    cert = certs.server
    ca = ["--ca-file", certs.ca_file]
    if case == "wrong-host":
        cert = certs.issue("other.pem", "other.example")
    elif case == "unknown-ca":
        ca = []
    else:
        cert = certs.issue(
            "expired.pem",
            "localhost",
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2020, 2, 1, tzinfo=dt.UTC),
        )
    with running(sk("listen", "-v", "--tls", "--cert", cert, "127.0.0.1", "0")) as lst:
        port = lst.port()
        done = run(sk("connect", "--tls", *ca, "localhost", str(port)))
    err = done.stderr.decode()
    assert done.returncode == 3, err
    assert err.count("\n") == 1, err
    assert needle in err
    assert f"TLS: certificate verify failed for localhost:{port}" in err
    assert "--insecure" in err


def test_insecure_says_so() -> None:
    with running(
        sk("listen", "-v", "--tls", "--self-signed", "127.0.0.1", "0", "-e", "cat")
    ) as lst:
        port = lst.port()
        lst.wait_err("self-signed certificate for localhost, SHA-256")
        done = run(sk("connect", "--tls", "--insecure", "127.0.0.1", str(port)), b"hi\n")
        assert done.stdout == b"hi\n", done.stderr
        assert b"verification is off" in done.stderr


def test_tls_server_without_certificate_is_usage_error() -> None:
    done = run(sk("listen", "--tls", "-p", "0"))
    assert done.returncode == 2
    assert b"--self-signed" in done.stderr


def test_plain_client_to_tls_server_is_one_line(certs: Certs) -> None:
    with running(sk("listen", "-v", "127.0.0.1", "0")) as lst:
        port = lst.port()
        done = run(
            sk("connect", "-w", "3", "--tls", "--ca-file", certs.ca_file, "127.0.0.1", str(port))
        )
    err = done.stderr.decode()
    assert done.returncode in (3, 5), err
    assert err.count("\n") == 1, err
