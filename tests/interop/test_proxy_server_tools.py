"""``socketkit proxy`` against the clients people use: curl and ncat (``-m tools``).

curl speaks SOCKS4, SOCKS4a, SOCKS5 (with the name sent to the proxy or
resolved first), HTTP forwarding (``-x http://``) and CONNECT
(``--proxytunnel``); ncat speaks SOCKS4, SOCKS5 and HTTP CONNECT. The
target is a loopback HTTP origin or echo server on a thread
(tests/proxy/proxysupport.py); the proxy a subprocess ready at its
listening line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import LOOPBACK_TIMEOUT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))

from proxysupport import MESSAGE, echo_target, http_target, proxy_server

pytestmark = [pytest.mark.tools, pytest.mark.timeout(120)]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_tool("curl"), "-sS", "--max-time", str(LOOPBACK_TIMEOUT), *args],
        capture_output=True,
        timeout=LOOPBACK_TIMEOUT + 5,
    )


CURL_MODES = [
    ["--socks5-hostname", "127.0.0.1:{port}"],
    ["--socks5", "127.0.0.1:{port}"],
    ["--socks4a", "127.0.0.1:{port}"],
    ["--socks4", "127.0.0.1:{port}"],
    ["-x", "http://127.0.0.1:{port}"],
    ["-x", "http://127.0.0.1:{port}", "--proxytunnel"],
]


@pytest.mark.parametrize("mode", CURL_MODES, ids=lambda m: " ".join(m[:1] + m[2:]))
def test_curl_through_socketkit_proxy(mode: list[str]) -> None:
    with http_target() as origin, proxy_server("-v") as (server, port):
        args = [a.format(port=port) for a in mode]
        done = _curl(*args, f"http://localhost:{origin}/hello")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello\n"
        assert "Traceback" not in server.err


def test_curl_forwards_several_requests_on_one_connection() -> None:
    with http_target() as origin, proxy_server("-v") as (server, port):
        url = f"http://127.0.0.1:{origin}"
        done = _curl(
            "-x", f"http://127.0.0.1:{port}", f"{url}/hello", f"{url}/stream", "-d", "abc",
            f"{url}/echo",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # -d makes every URL a POST: /hello and /stream answer 404 to POST.
        assert done.stdout.endswith(b"got abc")
        server.search(r": closed \(", "err")
        assert server.err.count(": connected") == 1
        assert server.err.count(": http POST ") == 3


@pytest.mark.parametrize(
    "mode",
    [
        ["--socks5-hostname", "127.0.0.1:{port}"],
        ["-x", "http://127.0.0.1:{port}"],
        ["-x", "http://127.0.0.1:{port}", "--proxy-digest"],
        ["-x", "http://127.0.0.1:{port}", "--proxy-digest", "--proxytunnel"],
    ],
    ids=["socks5", "http basic", "http digest", "connect digest"],
)
def test_curl_with_credentials_good_and_bad(mode: list[str]) -> None:
    with http_target() as origin, proxy_server("--auth", "alice:s3cret") as (_server, port):
        args = [a.format(port=port) for a in mode]
        url = f"http://127.0.0.1:{origin}/hello"
        good = _curl(*args, "--proxy-user", "alice:s3cret", url)
        assert good.returncode == 0, good.stderr
        assert good.stdout == b"hello\n"
        bad = _curl(*args, "--proxy-user", "alice:wrong", "-f", url)
        assert bad.returncode != 0
        assert bad.stdout == b""


def test_curl_meets_the_destination_policy() -> None:
    with (
        http_target() as origin,
        proxy_server("--deny-dest", f":{origin}") as (server, port),
    ):
        socks = _curl("--socks5-hostname", f"127.0.0.1:{port}", f"http://127.0.0.1:{origin}/")
        assert socks.returncode == 97, socks.stderr  # CURLE_PROXY
        assert socks.stderr.rstrip().endswith(b"(2)")  # RFC 1928: not allowed by ruleset
        forward = _curl("-x", f"http://127.0.0.1:{port}", "-w", "%{http_code}", "-o",
                        "/dev/null", f"http://127.0.0.1:{origin}/")  # fmt: skip
        assert forward.stdout == b"403"
        server.search(r"destination denied by --deny-dest :\d+", "err")


@pytest.mark.parametrize(
    "args",
    [
        ["--proxy-type", "socks4"],
        ["--proxy-type", "socks4", "--proxy-dns", "remote"],
        ["--proxy-type", "socks5"],
        ["--proxy-type", "socks5", "--proxy-dns", "remote"],
        ["--proxy-type", "http"],
        ["--proxy-type", "socks5", "--proxy-auth", "alice:s3cret"],
        ["--proxy-type", "http", "--proxy-auth", "alice:s3cret"],
    ],
    ids=lambda a: " ".join(a[1:]),
)
def test_ncat_through_socketkit_proxy(args: list[str]) -> None:
    auth = ["--auth", "alice:s3cret"] if "--proxy-auth" in args else []
    with echo_target() as target, proxy_server(*auth) as (server, port):
        done = subprocess.run(
            [_tool("ncat"), "--proxy", f"127.0.0.1:{port}", *args, "localhost", str(target)],
            input=MESSAGE,
            capture_output=True,
            timeout=LOOPBACK_TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == MESSAGE
        assert "Traceback" not in server.err
