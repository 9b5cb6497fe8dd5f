"""``socketkit proxy`` against the clients people use: curl and ncat (``-m tools``).

curl speaks SOCKS4, SOCKS4a, SOCKS5 (with the name sent to the proxy or
resolved first), HTTP forwarding (``-x http://``) and CONNECT
(``--proxytunnel``); ncat speaks SOCKS4, SOCKS5 and HTTP CONNECT. The
target is a loopback HTTP origin or echo server on a thread
(tests/proxy/proxysupport.py); the proxy a subprocess ready at its
listening line.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import LOOPBACK_TIMEOUT, Proc, echo_target, free_port, socketkit_argv, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))

from proxysupport import MESSAGE, http_target, proxy_server

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


# -- socketkit connect --proxy: through ncat's HTTP proxy and through our own ------


def _connect(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        socketkit_argv("connect", *args),
        input=MESSAGE,
        capture_output=True,
        timeout=LOOPBACK_TIMEOUT + 5,
    )


@contextlib.contextmanager
def _ncat_http_proxy(*auth: str) -> Iterator[int]:
    port = free_port()
    with Proc(
        [_tool("ncat"), "-v", "-l", "--proxy-type", "http", *auth, "127.0.0.1", str(port)]
    ) as proxy:
        # ncat 7.93 with --proxy-type listens on every interface whatever
        # address it is given, IPv6 first: wait for the IPv4 socket.
        proxy.search(rf"Listening on (?:0\.0\.0\.0|127\.0\.0\.1):{port}", "err")
        yield port


@pytest.mark.parametrize("auth", [[], ["--proxy-auth", "alice:s3cret"]], ids=["open", "auth"])
def test_connect_through_ncat_http_proxy(auth: list[str]) -> None:
    with echo_target() as target, _ncat_http_proxy(*auth) as port:
        argv = socketkit_argv("connect", "--proxy", f"127.0.0.1:{port}", *auth)
        with Proc([*argv, "127.0.0.1", str(target)], stdin=subprocess.PIPE) as client:
            # Input stays open until the echo is back: ncat's proxy ends the
            # whole tunnel at the first end of stream.
            assert client.proc.stdin is not None
            client.proc.stdin.write(MESSAGE)
            client.proc.stdin.flush()
            client.search(MESSAGE.decode())
            client.proc.stdin.close()
            assert client.wait() == 0, client.err_bytes
        if auth:
            bad = _connect(
                "--proxy", f"127.0.0.1:{port}", "--proxy-auth", "alice:wrong", "127.0.0.1",
                str(target),
            )  # fmt: skip
            assert bad.returncode == 3
            assert bad.stderr.decode().startswith(
                f"socketkit: error: HTTP proxy 127.0.0.1:{port} rejected our credentials (407"
            )


@pytest.mark.parametrize("kind", ["socks4", "socks5", "http"])
def test_connect_to_a_server_that_is_no_proxy(kind: str) -> None:
    # The lecture's server answers any bytes with "Hello from server".
    with start_server("tcp-server", "-p", "0", "-q") as server:
        port = server.port()
        done = _connect("--proxy", f"127.0.0.1:{port}", "--proxy-type", kind, "localhost", "80")
    assert done.returncode == 3
    assert done.stderr.count(b"\n") == 1
    text = done.stderr.decode()
    assert text.startswith(f"socketkit: error: the proxy 127.0.0.1:{port} does not speak "), text


@pytest.mark.parametrize(
    "args",
    [
        ["--proxy-type", "socks4"],
        ["--proxy-type", "socks5", "--proxy-dns", "local"],
        ["--proxy-type", "socks5", "--proxy-auth", "alice:s3cret"],
        ["--proxy-type", "http", "--proxy-auth", "alice:s3cret"],
    ],
    ids=lambda a: " ".join(a[1:]),
)
def test_connect_through_socketkit_proxy(args: list[str]) -> None:
    auth = ["--auth", "alice:s3cret"] if "--proxy-auth" in args else []
    with echo_target() as target, proxy_server(*auth) as (_server, port):
        done = _connect("--proxy", f"127.0.0.1:{port}", *args, "localhost", str(target))
        assert done.returncode == 0, done.stderr
        assert done.stdout == MESSAGE


def test_openbsd_nc_spelling_and_relay_address() -> None:
    with echo_target() as target, proxy_server() as (_server, port):
        nc = subprocess.run(
            socketkit_argv("nc", "-X", "5", "-x", f"127.0.0.1:{port}", "localhost", str(target)),
            input=MESSAGE,
            capture_output=True,
            timeout=LOOPBACK_TIMEOUT + 5,
        )
        assert (nc.returncode, nc.stdout) == (0, MESSAGE), nc.stderr
        relay = subprocess.run(
            socketkit_argv("relay", "-", f"socks4a:127.0.0.1:{port}:localhost:{target}"),
            input=MESSAGE,
            capture_output=True,
            timeout=LOOPBACK_TIMEOUT + 5,
        )
        assert (relay.returncode, relay.stdout) == (0, MESSAGE), relay.stderr


@pytest.mark.parametrize(
    ("server_args", "client_args", "message"),
    [
        (["--deny-dest", ":{target}"], ["--proxy-type", "socks5"],
         "SOCKS5 proxy 127.0.0.1:{port} refused the connection to localhost:{target}: "
         "connection not allowed by ruleset (reply 2)"),
        (["--auth", "a:b"], ["--proxy-type", "socks5", "--proxy-auth", "a:c"],
         "SOCKS5 proxy 127.0.0.1:{port} rejected the username and password (status 1)"),
        ([], ["--proxy-type", "http", "--proxy-dns", "none"],
         "cannot reach 'localhost' through the proxy without DNS "
         "(give an IP address, or let the proxy resolve the name)"),
    ],
)  # fmt: skip
def test_connect_errors_are_one_line_naming_the_proxy(
    server_args: list[str], client_args: list[str], message: str
) -> None:
    with echo_target() as target:
        args = [a.format(target=target) for a in server_args]
        with proxy_server(*args) as (_server, port):
            done = _connect("--proxy", f"127.0.0.1:{port}", *client_args, "localhost", str(target))
    text = done.stderr.decode()
    assert done.returncode in (2, 3)
    assert text == f"socketkit: error: {message.format(port=port, target=target)}\n"


@pytest.mark.parametrize("tunnel", [[], ["--proxytunnel"]], ids=["forward", "connect"])
def test_curl_through_a_tls_proxy(tunnel: list[str]) -> None:
    # TLS between client and proxy (curl -x https://), from the engine.
    with http_target() as origin, proxy_server("--tls", "--self-signed") as (_server, port):
        done = _curl(
            "--proxy-insecure", "-x", f"https://127.0.0.1:{port}", *tunnel,
            f"http://127.0.0.1:{origin}/hello",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello\n"
