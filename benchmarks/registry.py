"""What is benchmarked: the servers (name -> command, protocol) and the scenarios.

To add a server, add a :class:`ServerSpec` to :data:`SERVERS`: a name, a label,
and for each protocol it speaks a function that returns its command line.  The
command must print a line matching ``listening on port (\\d+)`` (any case) once
ready; port 0 must be accepted, so that every run gets a free port.

To add a scenario, add a :class:`Scenario` to :data:`SCENARIOS` (or to
``benchmarks.relay.RELAY_SCENARIOS`` for relays); its ``kind`` selects the
function in ``benchmarks.runner.KIND_RUNNERS`` that runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BIN_DIR = BENCH_DIR / "bin"
SERVERS_DIR = BENCH_DIR / "servers"

# The two references every result is divided by.
REF_C = "c"
REF_UVLOOP = "uvloop"


@dataclass(frozen=True)
class Context:
    """What a command line may need."""

    python: str
    socketkit_args: tuple[str, ...] = ()

    def script(self, name: str) -> list[str]:
        return [self.python, str(SERVERS_DIR / name)]


Command = Callable[[Context], list[str]]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    label: str
    tcp: Command | None = None
    udp: Command | None = None

    def command(self, protocol: str) -> Command | None:
        return self.tcp if protocol == "tcp" else self.udp


def _socketkit(subcommand: str) -> Command:
    def build(ctx: Context) -> list[str]:
        return [
            ctx.python,
            "-m",
            "socketkit",
            subcommand,
            "--service",
            "echo",
            "--host",
            "127.0.0.1",
            "-p",
            "0",
            *ctx.socketkit_args,
        ]

    return build


def _script(name: str, *extra: str) -> Command:
    """``python benchmarks/servers/NAME --port 0 EXTRA...``."""

    def build(ctx: Context) -> list[str]:
        return [*ctx.script(name), "--port", "0", *extra]

    return build


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in [
        ServerSpec(
            "socketkit",
            "socketkit engine",
            tcp=_socketkit("tcp-server"),
            udp=_socketkit("udp-server"),
        ),
        ServerSpec(
            "c",
            "C epoll",
            tcp=lambda _ctx: [str(BIN_DIR / "echo_server"), "--tcp", "0"],
            udp=lambda _ctx: [str(BIN_DIR / "echo_server"), "--udp", "0"],
        ),
        ServerSpec(
            "c-mmsg",
            "C epoll, recvmmsg/sendmmsg",
            udp=lambda _ctx: [str(BIN_DIR / "echo_server"), "--udp-mmsg", "0"],
        ),
        ServerSpec(
            "uvloop",
            "asyncio Protocol + uvloop",
            tcp=_script("asyncio_echo.py", "--uvloop"),
            udp=_script("asyncio_echo.py", "--uvloop", "--udp"),
        ),
        ServerSpec(
            "asyncio",
            "asyncio Protocol, default loop",
            tcp=_script("asyncio_echo.py"),
            udp=_script("asyncio_echo.py", "--udp"),
        ),
        ServerSpec(
            "streams",
            "asyncio streams, default loop",
            tcp=_script("streams_echo.py"),
        ),
        ServerSpec(
            "selectors",
            "selectors loop (Python)",
            tcp=_script("selectors_echo.py"),
            udp=_script("selectors_echo.py", "--udp"),
        ),
        ServerSpec(
            "threads",
            "socketserver.ThreadingTCPServer",
            tcp=_script("threading_echo.py"),
        ),
    ]
}


@dataclass(frozen=True)
class Scenario:
    """One load.  ``params`` go to the load generator; ``quick`` overrides them."""

    name: str
    kind: str  # echo | bulk | udp | idle | relay
    protocol: str  # tcp | udp
    description: str
    params: dict[str, int] = field(default_factory=dict)
    quick: dict[str, int] = field(default_factory=dict)
    metric: str = "req_per_s"  # key of the load generator's JSON
    unit: str = "req/s"
    higher_is_better: bool = True

    def effective(self, quick: bool) -> dict[str, int]:
        return {**self.params, **(self.quick if quick else {})}


GiB = 1 << 30
MiB = 1 << 20

SCENARIOS: list[Scenario] = [
    Scenario(
        "echo64-c1",
        "echo",
        "tcp",
        "64 B request, wait for its echo, repeat; 1 connection (round-trip latency bound)",
        {"conns": 1, "size": 64, "depth": 1},
    ),
    Scenario(
        "echo64-c100",
        "echo",
        "tcp",
        "64 B echo, 100 connections, 1 request in flight each",
        {"conns": 100, "size": 64, "depth": 1},
    ),
    Scenario(
        "echo64-c1000",
        "echo",
        "tcp",
        "64 B echo, 1000 connections, 1 request in flight each",
        {"conns": 1000, "size": 64, "depth": 1},
    ),
    Scenario(
        "echo64-c100-p16",
        "echo",
        "tcp",
        "64 B echo, 100 connections, 16 requests pipelined on each",
        {"conns": 100, "size": 64, "depth": 16},
    ),
    Scenario(
        "echo4k-c100",
        "echo",
        "tcp",
        "4 KiB echo, 100 connections, 1 request in flight each",
        {"conns": 100, "size": 4096, "depth": 1},
    ),
    Scenario(
        "echo4k-c1000-p16",
        "echo",
        "tcp",
        "4 KiB echo, 1000 connections, 16 requests pipelined on each",
        {"conns": 1000, "size": 4096, "depth": 16},
    ),
    Scenario(
        "bulk-1g",
        "bulk",
        "tcp",
        "1 GiB streamed through the echo on one connection, written and read concurrently",
        {"bytes": GiB},
        {"bytes": 64 * MiB},
        metric="MiB_per_s",
        unit="MiB/s",
    ),
    Scenario(
        "udp64",
        "udp",
        "udp",
        "64 B datagrams, 4 sockets x 16 in flight; lost ones are resent after 20 ms",
        {"sockets": 4, "window": 16, "size": 64},
        metric="datagrams_per_s",
        unit="dgram/s",
    ),
    Scenario(
        "idle-10k",
        "idle",
        "tcp",
        "10,000 connections that each echoed 1 byte and then sit idle: server RSS growth per connection",
        {"conns": 10_000},
        {"conns": 1000},
        metric="KiB_per_conn",
        unit="KiB/conn",
        higher_is_better=False,
    ),
]
