"""Bad input: one line on stderr, the documented exit code, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from socketkit import errors
from socketkit.cli import clients

from helpers import LOOPBACK_TIMEOUT, run_cli, socketkit_argv

pytestmark = pytest.mark.timeout(30)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["tcp-server", "-p", "70000"], 2, "invalid port 70000: must be from 0 to 65535"),
        (["tcp-server", "-p", "abc"], 2, "invalid port 'abc': expected a number from 0 to 65535"),
        (["udp-server", "-p=-1"], 2, "invalid port '-1'"),
        (["tcp-client", "-p", "65536"], 2, "invalid port 65536"),
        (["tcp-client", "--count", "0"], 2, "at least 1"),
        (["tcp-client", "-w", "soon"], 2, "expected a number of seconds"),
        (["tcp-server", "-4", "-6"], 2, "not allowed with argument"),
        (["no-such-command"], 2, "invalid choice"),
        ([], 2, "required: COMMAND"),
    ],
)
def test_usage_errors(argv: list[str], code: int, text: str) -> None:
    result = run_cli(*argv)
    assert result.code == code
    assert text in _one_line(result.err)


def test_unknown_host() -> None:
    result = run_cli("tcp-client", "--host", "no-such-host.invalid", "-w", "5")
    assert result.code == 2
    assert _one_line(result.err) == (
        "socketkit: error: cannot resolve host 'no-such-host.invalid': no such host"
    )


def _closed_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_connection_refused() -> None:
    port = _closed_port()
    result = run_cli("tcp-client", "-p", str(port), "-w", "5")
    assert result.code == 3
    assert _one_line(result.err) == (
        f"socketkit: error: connection refused by 127.0.0.1:{port} (is a server listening?)"
    )


def test_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("tcp-server", "--host", "127.0.0.1", "-p", str(port), "--once")
    assert result.code == 4
    assert _one_line(result.err) == (
        f"socketkit: error: address already in use: 127.0.0.1:{port} "
        "(another server is running there?)"
    )


def test_udp_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = run_cli("udp-server", "--host", "127.0.0.1", "-p", str(port), "--once")
    assert result.code == 4
    assert "address already in use" in _one_line(result.err)


def test_udp_server_absent_after_retries() -> None:
    port = _closed_port(socket.SOCK_DGRAM)
    result = run_cli("udp-client", "-p", str(port), "-w", "0.2", "--retries", "2")
    # Refused (ICMP port unreachable on every try, as on Linux loopback), or
    # timed out where the ICMP message is not delivered.
    assert result.code in (3, 5)
    line = _one_line(result.err)
    assert f"127.0.0.1:{port}" in line
    assert "after 3 tries" in line


def test_udp_message_too_large() -> None:
    result = run_cli("udp-client", "-p", "9", "-m", "x" * 70000)
    assert result.code == 7
    assert _one_line(result.err) == (
        "socketkit: error: message of 70000 bytes is larger than one datagram to "
        "127.0.0.1:9 can carry (65507 bytes at most)"
    )


@pytest.mark.parametrize("command", ["tcp-server", "udp-server"])
def test_unix_path_unusable(command: str, tmp_path: object) -> None:
    path = f"{tmp_path}/missing-dir/sock"
    result = run_cli(command, "--unix", path, "--once")
    assert result.code == 4
    assert _one_line(result.err) == (
        f"socketkit: error: cannot bind unix:{path}: no such file or directory"
    )


def test_unix_path_is_a_regular_file(tmp_path: object) -> None:
    path = f"{tmp_path}/file"
    with open(path, "w") as f:
        f.write("not a socket")
    result = run_cli("tcp-server", "--unix", path, "--once")
    assert result.code == 4
    assert "a file that is not a socket is there" in _one_line(result.err)


def test_unix_client_nothing_there(tmp_path: object) -> None:
    result = run_cli("tcp-client", "--unix", f"{tmp_path}/nothing")
    assert result.code == 3
    assert "is a server listening?" in _one_line(result.err)


def test_traceback_flag_shows_more() -> None:
    port = _closed_port()
    result = run_cli("tcp-client", "-p", str(port), "--traceback")
    assert result.code == 3
    assert "Traceback" in result.err
    assert result.err.strip().endswith("(is a server listening?)")


def _readme_exit_codes() -> dict[int, str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    return {int(r[1]): r[2].strip() for r in rows if r[1].strip().isdigit()}


def _error_classes() -> list[type[errors.SocketkitError]]:
    found = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.SocketkitError)
    ]
    return sorted(found, key=lambda cls: cls.__name__)


def _instance(cls: type[errors.SocketkitError]) -> errors.SocketkitError:
    if issubclass(cls, errors.SocketTimeoutError):
        return cls("receive timed out", phase="receive", timeout=1.0)
    if issubclass(cls, errors.IncompleteReadError):
        return cls("stream ended", partial=b"")
    if issubclass(cls, errors.ProxyError):
        return cls(f"a {cls.__name__}", protocol="SOCKS5")
    if issubclass(cls, errors.MessageTooLargeError):
        return cls("message too large", size=2, limit=1)
    return cls(f"a {cls.__name__}")


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_is_one_line_in_one_format_with_a_documented_code(
    cls: type[errors.SocketkitError], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One format (``socketkit: error: ...``) and the README's table, for every class."""
    exc = _instance(cls)

    def fail(_args: object, _env: object) -> int:
        raise exc

    monkeypatch.setattr(clients, "run_tcp", fail)  # bound when main builds the parser
    result = run_cli("tcp-client")
    assert _one_line(result.err) == f"socketkit: error: {exc}"
    assert result.code == exc.exit_code
    assert exc.exit_code in _readme_exit_codes()


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["tcp-client", "-p", "abc"], 2),
        (["tcp-client", "--cert", "c.pem"], 2),
        (["tcp-server", "--tls", "--cert", "nope.pem"], 2),
        (["connect"], 2),
        (["relay", "udp-listen:0,fork", "-"], 2),
        ([], 2),
    ],
)
def test_usage_errors_share_the_format(argv: list[str], code: int) -> None:
    result = run_cli(*argv)
    assert result.code == code
    assert _one_line(result.err).startswith("socketkit: error: ")


def test_error_exit_code_survives_a_closed_stderr_pipe() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        code = subprocess.call(
            socketkit_argv("nc", "127.0.0.1", str(_closed_port())),
            stdin=subprocess.DEVNULL,
            stderr=write_end,
            timeout=LOOPBACK_TIMEOUT,
        )
    finally:
        os.close(write_end)
    assert code == 3


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (
            ["bench", "client", "127.0.0.1", "-p", "{port}", "-t", "1", "--plot", "p.png"],
            "--plot needs matplotlib, which is not installed: pip install 'socketkit[plot]'",
        ),
        (
            ["tcp-server", "-p", "{port}", "--tls", "--self-signed"],
            "--self-signed needs cryptography, which is not installed: pip install cryptography",
        ),
    ],
)
def test_a_missing_optional_package_is_refused_before_any_work(
    argv: list[str], text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    missing = {"matplotlib", "cryptography"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in missing else real_find_spec(name, *a),
    )
    port = str(_closed_port())
    result = run_cli(*(a.format(port=port) for a in argv))
    # 8 (not installed), not 3: nothing was connected to or measured first.
    assert result.code == 8
    assert _one_line(result.err) == f"socketkit: error: {text}"


def test_the_readme_table_lists_exactly_the_codes_in_use() -> None:
    from socketkit.cli import EXIT_INTERRUPTED, EXIT_TERMINATED

    in_use = {cls.exit_code for cls in _error_classes()} | {0, EXIT_INTERRUPTED, EXIT_TERMINATED}
    assert set(_readme_exit_codes()) == in_use
