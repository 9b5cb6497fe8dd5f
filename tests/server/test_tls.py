"""TLS in the lecture's tcp-server and tcp-client (trustme certificates)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trustme

from helpers import LOOPBACK_TIMEOUT, run_cli, start_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    folder = tmp_path_factory.mktemp("pki")
    paths = {"ca": folder / "ca.pem", "chain": folder / "chain.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    Path(paths["chain"]).write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return {name: str(path) for name, path in paths.items()}


def _tls_server(pki: dict[str, str], *extra: str):  # type: ignore[no-untyped-def]
    args = ["tcp-server", "--tls", "--cert", pki["chain"], "--key", pki["key"]]
    return start_server(*args, "--host", "127.0.0.1", "-p", "0", *extra)


def test_tls_exchange_verified(pki: dict[str, str]) -> None:
    with _tls_server(pki, "--once") as srv:
        port = srv.port()
        result = run_cli(
            "tcp-client", "--tls", "--ca-file", pki["ca"], "--host", "localhost", "-p", str(port)
        )
        assert (result.code, result.out, result.err) == (0, "Received: Hello from server\n", "")
        assert srv.wait() == 0
        assert "Received: Hello from client" in srv.out


def test_tls_count_over_one_connection(pki: dict[str, str]) -> None:
    with _tls_server(pki) as srv:
        port = srv.port()
        result = run_cli(
            "tcp-client", "--tls", "--ca-file", pki["ca"], "-p", str(port), "--count", "3"
        )
        assert result.code == 0, result.err
        assert result.out == "Received: Hello from server\n" * 3
        assert srv.terminate() == 0


def test_unknown_ca_is_one_line_error(pki: dict[str, str]) -> None:
    with _tls_server(pki) as srv:
        port = srv.port()
        result = run_cli("tcp-client", "--tls", "-p", str(port))
        assert result.code == 3
        assert result.err.count("\n") == 1
        assert "TLS: certificate verify failed for 127.0.0.1:" in result.err
        assert "(use --insecure to skip verification)" in result.err
        # The server logs the failed handshake on one line and keeps serving.
        ok = run_cli("tcp-client", "--tls", "--ca-file", pki["ca"], "-p", str(port))
        assert ok.code == 0
        assert srv.terminate() == 0
        assert "Traceback" not in srv.err


def test_plain_client_to_tls_server_is_logged_and_survived(pki: dict[str, str]) -> None:
    with _tls_server(pki) as srv:
        port = srv.port()
        with socket.create_connection(("127.0.0.1", port), LOOPBACK_TIMEOUT) as s:
            s.settimeout(LOOPBACK_TIMEOUT)
            s.sendall(b"Hello from client\n")
            data = b""
            while chunk := s.recv(1024):
                data += chunk
        assert b"Hello from server" not in data
        assert run_cli("tcp-client", "--tls", "--ca-file", pki["ca"], "-p", str(port)).code == 0
        assert srv.terminate() == 0
        assert "TLS: handshake with 127.0.0.1:" in srv.err
        assert "Traceback" not in srv.err


def test_self_signed_and_insecure(capsys: pytest.CaptureFixture[str]) -> None:
    with start_server(
        "tcp-server", "--tls", "--self-signed", "--host", "127.0.0.1", "-p", "0"
    ) as srv:
        port = srv.port()
        result = run_cli("tcp-client", "--tls", "--insecure", "-p", str(port))
        assert result.code == 0
        assert result.out == "Received: Hello from server\n"
        assert "verification is off (--insecure)" in capsys.readouterr().err
        assert srv.terminate() == 0


def test_tls_options_need_tls() -> None:
    result = run_cli("tcp-client", "--insecure")
    assert result.code == 2
    assert result.err.strip() == "socketkit: error: --insecure needs --tls"


@pytest.mark.parametrize(
    ("files", "text"),
    [
        (("chain",), "{chain} holds no private key: give it with --key FILE (key= in a relay)"),
        (("chain", "chain"), "{chain} holds no private key (PEM)"),
        (("key", "key"), "{key} holds no certificate (PEM)"),
    ],
    ids=["cert-without-key", "key-file-without-key", "cert-file-without-cert"],
)
def test_pem_file_lacking_a_part_says_which(
    pki: dict[str, str], files: tuple[str, ...], text: str
) -> None:
    args = ["--cert", pki[files[0]]] + (["--key", pki[files[1]]] if len(files) > 1 else [])
    result = run_cli("tcp-server", "--tls", *args, "-p", "0", "--once")
    assert result.code == 2
    assert result.err == f"socketkit: error: TLS: {text.format(**pki)}\n"
