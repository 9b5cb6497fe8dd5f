"""Generate the tutorial and the command pages from real runs: ``python docs/generate.py``.

Every command shown in docs/tutorial.md is run here, on loopback, and its
real output is pasted under it, so the documentation cannot drift from the
program. Servers listen on port 0 (the kernel picks a free port) and the
client commands use the port they printed. Measured figures change from run
to run: their blocks are marked ``<!-- measured -->`` and
tests/docs compare everything else after masking numbers.

Options: ``--out DIR`` writes elsewhere (the test uses a temporary folder);
``--no-images`` skips the example plot.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Seconds any documented command may take.
STEP_TIMEOUT = 30.0
#: Marker before an output block whose numbers are measurements.
MEASURED = "<!-- measured -->"

ENV = dict(os.environ, NO_COLOR="1", COLUMNS="80")


def _argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "socketkit", *args]


def _show(args: list[str]) -> str:
    return "$ socketkit " + " ".join(a if a and " " not in a else repr(a) for a in args)


def run(args: list[str], stdin: str | None = None, *, stderr: bool = False) -> str:
    """Run ``socketkit ARGS``; return its stdout (and stderr when asked), checked."""
    proc = subprocess.run(
        _argv(args), input=stdin, capture_output=True, text=True, timeout=STEP_TIMEOUT, env=ENV
    )
    if proc.returncode != 0:
        raise SystemExit(f"{_show(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout + (proc.stderr if stderr else "")


class Server:
    """A server in the background; ``port`` is read from its listening line."""

    def __init__(
        self, args: list[str], pattern: str = r"listening on port (\d+)", *, on_stderr: bool = False
    ) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            _argv(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.lines: list[str] = []
        self.err = ""
        self.on_stderr = on_stderr
        stream = self.proc.stderr if on_stderr else self.proc.stdout
        assert stream is not None
        timer = threading.Timer(STEP_TIMEOUT, self.proc.kill)
        timer.start()
        try:
            for line in stream:
                self.lines.append(line)
                match = re.search(pattern, line)
                if match:
                    self.port = match.group(1)
                    break
            else:
                raise SystemExit(f"{_show(args)} never said it was listening")
        finally:
            timer.cancel()

    def finish(self, *, stop: bool = False) -> str:
        """Wait for the server to end (or stop it); return all it printed."""
        if stop:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=STEP_TIMEOUT)
        self.err = err
        if self.on_stderr:
            return out + "".join(self.lines) + err
        return "".join(self.lines) + out


def block(command: str, output: str, *, measured: bool = False) -> str:
    text = f"```console\n{command}\n{output.rstrip()}\n```\n"
    return f"{MEASURED}\n{text}" if measured else text


def tutorial(images: Path | None) -> str:
    parts: list[str] = [
        "# The socket lecture with socketkit\n",
        "This walk follows the lecture: the four programs, framing, concurrency, TLS and "
        "measuring. Every command below was run by `docs/generate.py` on loopback, and the "
        "output under it is what it printed. Servers are started with `-p 0`, so the kernel "
        "picks a free port; they print it, and the clients use it. Without `-p` they use "
        "8080, as the lecture's programs do.\n",
        "Run each server in one terminal and its client in another.\n",
    ]

    parts.append("## 1. The TCP server and client\n")
    parts.append(
        "The lecture's TCP server: socket, `SO_REUSEADDR`, bind, listen, accept one client, "
        "read its message, answer `Hello from server`, close. `--once` stops after one "
        "client, as the original does.\n"
    )
    server = Server(["tcp-server", "-p", "0", "--once"])
    client_args = ["tcp-client", "-p", server.port]
    client_out = run(client_args)
    parts.append(block(_show(server.args), server.finish()))
    parts.append(block(_show(client_args), client_out))
    parts.append(
        "The client sends its message with no newline (as the C client does), then "
        "half-closes the connection so a line-reading (Java) server also sees the end.\n"
    )

    parts.append("## 2. The UDP server and client\n")
    parts.append("One datagram in, one datagram back, no connection.\n")
    server = Server(["udp-server", "-p", "0", "--once"])
    client_args = ["udp-client", "-p", server.port]
    client_out = run(client_args)
    parts.append(block(_show(server.args), server.finish()))
    parts.append(block(_show(client_args), client_out))

    parts.append("## 3. What the system calls are: `--trace`\n")
    parts.append(
        "Every command takes `--trace`: each socket system call is printed on standard "
        "error as it happens, with its descriptor, arguments and result. Here is the TCP "
        "client again. Then look at the server's `bind` line: with `-p 0` the kernel picks "
        "the port; with a port given, say `-p 8080`, the line shows the number people write "
        "and the two bytes that go on the wire: `port 8080 = 0x1f90 in host order, bytes "
        "1f 90 on the wire (htons)`.\n"
    )
    server = Server(["tcp-server", "--host", "127.0.0.1", "-p", "0", "--once", "--trace"])
    client_args = ["tcp-client", "-p", server.port, "--trace"]
    client_out = run(client_args, stderr=True)
    server_out = server.finish()
    parts.append(block(_show(client_args), client_out))
    parts.append(
        "The server's side (its `--trace` lines went to standard error, shown here "
        "after its normal output):\n"
    )
    parts.append(block(_show(server.args), server_out + server.err))
    parts.append(
        "The trace tells the truth: `tests/trace` runs these commands under "
        "`strace -f -e trace=network,close` and checks that every line matches a system "
        "call strace saw, in the same order, with the same descriptor and result. "
        "(`send` is the `sendto` system call with no address, `recv` is `recvfrom`, "
        "`accept` is `accept4`.) Under `--trace` servers use the default asyncio loop, "
        "because uvloop makes its calls in C where they cannot be traced.\n"
    )

    parts.append("## 4. Framing: messages on a byte stream\n")
    parts.append(
        "TCP delivers bytes, not messages: one `recv` may return half a message or two. "
        "A protocol needs framing. With `--frame line` the echo service answers each "
        "newline-terminated line; the client sends three lines on one connection.\n"
    )
    server = Server(["tcp-server", "-p", "0", "--once", "--service", "echo", "--frame", "line"])
    client_args = ["tcp-client", "-p", server.port, "--count", "3", "-m", "ping"]
    client_out = run(client_args)
    parts.append(block(_show(server.args), server.finish()))
    parts.append(block(_show(client_args), client_out))

    parts.append("## 5. Concurrency: many clients at once\n")
    parts.append(
        "Without `--once` a server keeps serving, many clients at the same time, on one "
        "event loop. Five clients run together here against the echo service:\n"
    )
    server = Server(["tcp-server", "-p", "0", "-q", "--service", "echo"])
    outputs: list[str] = [""] * 5

    def one(i: int) -> None:
        outputs[i] = run(["tcp-client", "-p", server.port, "-m", f"client {i}"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(STEP_TIMEOUT)
    parts.append(
        block(
            f'$ for i in 0 1 2 3 4; do socketkit tcp-client -p {server.port} -m "client $i" & '
            "done; wait",
            "".join(outputs),
        )
    )
    parts.append(block(_show(server.args) + "   # stopped with Ctrl-C", server.finish(stop=True)))

    parts.append("## 6. TLS\n")
    parts.append(
        "`listen` and `connect` (the netcat-like commands) speak TLS with `--tls`. "
        "`--self-signed` makes a throwaway certificate for a test; the client's "
        "`--insecure` skips verification and says so. Use real certificates "
        "(`--cert`, `--key`, `--ca-file`) for anything else.\n"
    )
    server = Server(
        ["listen", "-v", "--tls", "--self-signed", "-p", "0"],
        pattern=r"listening TLS on port (\d+)",
        on_stderr=True,
    )
    client_args = ["connect", "--tls", "--insecure", "127.0.0.1", server.port]
    client_out = run(client_args, stdin="hello over TLS\n", stderr=True)
    parts.append(block(_show(server.args), server.finish()))
    parts.append(block("$ echo 'hello over TLS' | socketkit " + " ".join(client_args), client_out))

    parts.append("## 7. Proxies: SOCKS and HTTP, both ways\n")
    parts.append(
        "`socketkit proxy` serves SOCKS4, SOCKS4a, SOCKS5 and HTTP (CONNECT tunnels and "
        "plain `http://` requests, as `curl -x` sends them) on one port, 1080 by default, "
        "bound to 127.0.0.1 unless `--host` says otherwise. `--auth USER:PASS` asks for "
        "credentials, `--allow-dest`/`--deny-dest` say which targets clients may reach "
        "(`10.0.0.0/8`, `.example.com`, `:22`). On the client side `connect` and `nc` take "
        "ncat's `--proxy HOST:PORT --proxy-type socks4|socks5|http` (and OpenBSD nc's "
        "`-X 5 -x HOST:PORT`), and `relay` takes `socks5:PROXY:PORT:HOST:PORT` and its "
        "kin. Here an echo server is reached through the proxy, once per protocol:\n"
    )
    target = Server(["tcp-server", "-p", "0", "-q", "--service", "echo"])
    proxy = Server(["proxy", "-p", "0", "--deny-dest", ":22"])
    for kind in ("socks5", "socks4", "http"):
        args = ["connect", "--proxy", f"127.0.0.1:{proxy.port}", "--proxy-type", kind]
        args += ["localhost", target.port]
        parts.append(block(f"$ echo 'via {kind}' | " + _show(args)[2:], run(args, f"via {kind}\n")))
    parts.append(block(_show(proxy.args) + "   # stopped with Ctrl-C", proxy.finish(stop=True)))
    target.finish(stop=True)

    parts.append("## 8. Measuring: `socketkit bench`\n")
    parts.append(
        "An iperf-class benchmark that speaks iperf3's protocol: `socketkit bench client "
        "HOST` measures against any iperf3 3.x server (`iperf3 -s`) and `socketkit bench "
        "server` answers `iperf3 -c`, with iperf3's options (`-P` streams, `-R` reverse, "
        "`--bidir`, `-u -b` UDP bitrate with loss and jitter, `-n`/`-k`, `-w`, `-O`, "
        "`-J` for iperf3's JSON document, `--get-server-output`). Unlike iperf3's server, "
        "`bench server` runs many tests at once (`-1` stops after one). What iperf3 lacks "
        "stays: request/response latency percentiles (`--latency`, against `bench server` "
        "or any echo service; an iperf3 server has no echo and the client says so) and "
        "`--plot FILE.png`. The figures below are from the machine that generated this "
        "page, socketkit at both ends.\n"
    )
    server = Server(["bench", "server", "-p", "0"])
    for args in (
        ["bench", "client", "127.0.0.1", "-p", server.port, "-t", "2"],
        ["bench", "client", "127.0.0.1", "-p", server.port, "-t", "1", "-u", "-b", "100M"],
        [
            "bench",
            "client",
            "127.0.0.1",
            "-p",
            server.port,
            "-t",
            "2",
            "-i",
            "0.25",
            "--latency",
            "-P",
            "4",
            "--depth",
            "2",
        ],
    ):
        shown = list(args)
        if images is not None and "--latency" in args:
            args = [*args, "--plot", str(images / "bench-latency.png")]
            shown = [*shown, "--plot", "bench-latency.png"]
        parts.append(block(_show(shown), run(args), measured=True))
    server.finish(stop=True)
    parts.append(
        "The last command's plot: requests per second over time, and the cumulative "
        "latency distribution with the percentiles marked.\n\n"
        "![latency plot](images/bench-latency.png)\n"
    )
    parts.append(
        "Against iperf3 the commands are the same: `socketkit bench client HOST -P 4` "
        "with `iperf3 -s` on HOST, or `iperf3 -c HOST -R` with `socketkit bench server` "
        "there. Both ends count every stream's bytes exactly: what one side sent is what "
        "the other received. One Python process is about one core: against a C peer at "
        "tens of Gbit/s the Python side is the limit, and `cpu_utilization_percent` in "
        "the `-J` document shows it.\n"
    )
    parts.append("See [the command pages](commands/) for every option.\n")
    return "\n".join(parts)


COMMANDS = [
    "tcp-server",
    "tcp-client",
    "udp-server",
    "udp-client",
    "demo",
    "connect",
    "listen",
    "nc",
    "relay",
    "proxy",
    "bench server",
    "bench client",
]


def command_pages() -> dict[str, str]:
    pages = {}
    for name in COMMANDS:
        text = run([*name.split(), "--help"])
        pages[f"commands/{name.replace(' ', '-')}.md"] = (
            f"# socketkit {name}\n\nGenerated from `socketkit {name} --help` by "
            f"docs/generate.py.\n\n```text\n{text.rstrip()}\n```\n"
        )
    index = ["# Commands\n", "One page per command, from its `--help`.\n"]
    index += [f"- [socketkit {n}]({n.replace(' ', '-')}.md)" for n in COMMANDS]
    pages["commands/README.md"] = "\n".join(index) + "\n"
    return pages


def normalize(text: str) -> str:
    """The stable part of a page: measured blocks dropped, numbers and fingerprints masked."""
    text = re.sub(re.escape(MEASURED) + r"\n```console\n(.*?)\n```", "(measured)", text, flags=re.S)
    text = re.sub(r"\b[0-9A-F]{2}(?::[0-9A-F]{2})+\b", "<hex>", text)
    return re.sub(r"\d+", "N", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--no-images", action="store_true")
    args = parser.parse_args()
    images = None if args.no_images else args.out / "images"
    if images is not None:
        images.mkdir(parents=True, exist_ok=True)
    pages = {"tutorial.md": tutorial(images), **command_pages()}
    for name, text in pages.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
