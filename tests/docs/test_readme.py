"""Every shell line of the README works as pasted (ports aside).

Each line of the README's ``sh`` blocks is run through ``/bin/sh`` with
``socketkit`` on the PATH, in a folder holding the files the lines name
(``data.txt``, ``c.pem``, ``k.pem``). The ports the README uses (8080,
8443, 9000, 8000) become free ports, and a lecture command that relies on
the default port 8080 gets it spelled out, as the tutorial uses ``-p 0``.
How a line is checked follows from what it is:

- ``A & B``: as pasted; B must succeed (so B must wait for A, e.g. with
  ``--wait-for-server``), then A's process group is stopped.
- a server (``tcp-server``, ``udp-server``, ``listen``, ``nc -l``, a relay
  with a ``-listen`` address, ``proxy``): it must start serving, then stop
  with exit 0 on SIGTERM.
- a client (``tcp-client``, ``udp-client``, ``connect``): against a lecture
  server started for it, it must exit 0.
- ``demo``: exits 0.
- ``pip install`` lines are what CI itself runs (``.ci/run``); a line
  naming an example host (``iperf.example.net``) has no server here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from socketkit.tls import self_signed_pem

from helpers import LOOPBACK_TIMEOUT, Proc, free_port, start_server, wait_connectable

pytestmark = pytest.mark.timeout(60)

README = Path(__file__).resolve().parents[2] / "README.md"
#: The ports the README's lines use; each becomes a free port.
README_PORTS = ("8080", "8443", "9000", "8000", "5201", "1080")
LECTURE_COMMANDS = ("tcp-server", "tcp-client", "udp-server", "udp-client")


def readme_lines() -> list[str]:
    lines, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```sh"
            continue
        if inside and line.strip():
            lines.append(re.sub(r"\s+#.*$", "", line).strip())
    return lines


def _with_free_ports(line: str) -> tuple[str, dict[str, int]]:
    ports = {number: free_port() for number in README_PORTS}
    pattern = r"\b(" + "|".join(README_PORTS) + r")\b"
    line = re.sub(pattern, lambda m: str(ports[m.group(1)]), line)
    parts = []
    for command in line.split(" & "):
        words = command.split()
        if len(words) > 1 and words[1] in LECTURE_COMMANDS and "-p" not in words:
            command += f" -p {ports['8080']}"
        parts.append(command)
    return " & ".join(parts), ports


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with the files the README names and a ``socketkit`` on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "socketkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m socketkit "$@"\n')
    shim.chmod(0o755)
    cert, key, _ = self_signed_pem()
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "data.txt").write_text("some data\n")
    return tmp_path


def _env(workdir: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{workdir / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def _shell(line: str, workdir: Path) -> Proc:
    """``line`` in ``workdir`` through /bin/sh, in a process group of its own
    (one command is exec'd, so its exit code is the process's)."""
    run = line if " & " in line else f"exec {line}"
    return Proc(["/bin/sh", "-c", f'cd "{workdir}" && {run}'], env=_env(workdir))


def _stop_group(proc: Proc) -> int:
    with suppress(ProcessLookupError):
        os.killpg(proc.proc.pid, signal.SIGTERM)
    return proc.wait()


def _kind(line: str) -> str:
    if "pip install" in line:
        return "install"
    if ".example." in line:
        return "example host"
    if " & " in line:
        return "background"
    words = line.split()
    command = words[1]
    # nc listens with -l, alone or among other short flags (-lvnp).
    listens = any(w.startswith("-") and not w.startswith("--") and "l" in w for w in words[2:])
    if command in ("tcp-server", "udp-server", "listen", "proxy") or (command == "nc" and listens):
        return "server"
    if command == "relay" and "-listen:" in line:
        return "server"
    if command in ("tcp-client", "udp-client", "connect"):
        return "client"
    if command == "demo":
        return "demo"
    raise AssertionError(f"README line of an unknown kind (add a check here): {line}")


@pytest.mark.parametrize("line", readme_lines())
def test_readme_line_works_as_pasted(line: str, workdir: Path) -> None:
    kind = _kind(line)
    if kind == "install":
        pytest.skip("creates a virtual environment: what .ci/run does")
    if kind == "example host":
        pytest.skip("talks to an example host (RFC 2606 name), not to one on this machine")
    run, ports = _with_free_ports(line)
    if kind == "background":
        with _shell(run, workdir) as proc:
            # The shell ends with B; A still holds the pipes until stopped.
            code = proc.proc.wait(LOOPBACK_TIMEOUT * 3)
            _stop_group(proc)
            assert code == 0, f"{run}\n{proc.err_bytes.decode()}"
        return
    if kind == "server":
        with _shell(run, workdir) as proc:
            port = next(p for p in ports.values() if str(p) in run.split(" tcp:")[0])
            if any(f" {c}" in run for c in (*LECTURE_COMMANDS, "proxy")):
                # Its ready line: printed once it handles signals too (a
                # bound socket accepts connections a moment earlier).
                proc.search(r"listening on port")
            if "udp-server" not in run:
                wait_connectable(port)  # with --once: its one client
            if "--once" in run:
                assert proc.wait() == 0, proc.err_bytes.decode()
            else:
                assert _stop_group(proc) == 0, proc.err_bytes.decode()
        return
    if kind == "client":
        server = "udp-server" if "udp-client" in run else "tcp-server"
        port = next(p for p in ports.values() if str(p) in run)
        with start_server(server, "--host", "127.0.0.1", "-p", str(port)) as srv:
            srv.port()
            result = subprocess.run(
                ["/bin/sh", "-c", run],
                cwd=workdir,
                env=_env(workdir),
                capture_output=True,
                text=True,
                timeout=LOOPBACK_TIMEOUT,
            )
        assert result.returncode == 0, f"{run}\n{result.stderr}"
        return
    result = subprocess.run(
        ["/bin/sh", "-c", run],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=LOOPBACK_TIMEOUT * 3,
    )
    assert result.returncode == 0, result.stderr
