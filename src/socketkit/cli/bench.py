"""``socketkit bench server`` and ``socketkit bench client HOST``: iperf3's options."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from typing import TextIO

from ..errors import UsageError
from ._common import (
    Env,
    add_common_options,
    add_wait_for_server,
    nonnegative_float,
    port_number,
    positive_int,
)
from ._flags import family_from_flags

__all__ = ["add_parsers"]

#: iperf3's port, so firewall rules written for it apply.
DEFAULT_BENCH_PORT = 5201


def bitrate(text: str) -> float:
    """``100M`` -> 100e6 bits per second (K, M, G: powers of 1000, as iperf3)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a bitrate like 100M, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a bitrate above 0, got {text!r}")
    return value


def size(text: str) -> int:
    """``128K`` -> 131072 bytes (K, M, G: powers of 1024, as iperf3's sizes)."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a size like 128K, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a size of at least 1 byte, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("expected a fraction in [0, 1)")
    return value


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=DEFAULT_BENCH_PORT,
        help=f"port (default {DEFAULT_BENCH_PORT}, iperf3's)",
    )
    p.add_argument(
        "-i", "--interval", type=nonnegative_float, default=1.0, help="seconds between reports"
    )
    p.add_argument("-J", "--json", action="store_true", help="print iperf3's JSON document")
    p.add_argument("--logfile", metavar="FILE", help="append the output to FILE")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    family.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    add_common_options(p)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure throughput, latency, UDP loss and jitter (speaks iperf3)",
        description="An iperf-class benchmark speaking iperf3's protocol: 'bench client' "
        "measures against an iperf3 server or 'bench server'; 'bench server' answers "
        "iperf3 clients.",
    )
    roles = bench.add_subparsers(dest="role", metavar="ROLE", parser_class=type(bench))
    roles.required = True

    server = roles.add_parser(
        "server",
        help="answer iperf3 clients (many tests at once)",
        description="An iperf3 server: answers 'iperf3 -c' and 'socketkit bench client' "
        "(TCP, UDP, -R, -P, --bidir, --get-server-output), and echoes for --latency. "
        "Unlike iperf3, which serves one test at a time, it serves many at once.",
    )
    server.add_argument(
        "-B", "--host", default=None, help="address to bind (default: every interface)"
    )
    server.add_argument(
        "-1", "--one-off", "--once", dest="once", action="store_true", help="stop after one test"
    )
    _shared(server)
    server.set_defaults(run=run_server)

    client = roles.add_parser(
        "client",
        help="run a test against an iperf3 server or 'bench server'",
        description="iperf3's client: throughput (TCP), bitrate with loss and jitter (UDP) "
        "against any iperf3 3.x server or 'socketkit bench server'; --latency measures "
        "request/response percentiles against 'bench server' or any echo service.",
    )
    client.add_argument("host", help="the server (any echo service for --latency)")
    mode = client.add_mutually_exclusive_group()
    mode.add_argument("-u", "--udp", action="store_true", help="UDP: bitrate, loss, jitter")
    mode.add_argument("--latency", action="store_true", help="request/response latency (ping-pong)")
    client.add_argument(
        "-P", "--parallel", type=positive_int, default=1, help="streams or connections (default 1)"
    )
    client.add_argument(
        "-t",
        "--time",
        type=nonnegative_float,
        default=10.0,
        help="seconds (default 10; 0: until interrupted)",
    )
    ends = client.add_mutually_exclusive_group()
    ends.add_argument("-n", "--bytes", type=size, default=0, help="bytes to send instead of -t")
    ends.add_argument(
        "-k", "--blockcount", type=size, default=0, help="blocks (-l) to send instead of -t"
    )
    client.add_argument(
        "-l",
        "--length",
        type=size,
        default=None,
        help="bytes per write (TCP 128K), datagram (UDP 1460) or request (latency 64)",
    )
    client.add_argument("-R", "--reverse", action="store_true", help="the server sends")
    client.add_argument("--bidir", action="store_true", help="both directions at once")
    client.add_argument(
        "-b",
        "--bitrate",
        type=bitrate,
        default=None,
        help="target bits/s per stream, e.g. 100M (UDP default 1M; TCP default unlimited)",
    )
    client.add_argument("-w", "--window", type=size, default=0, help="socket buffer size")
    client.add_argument(
        "-O", "--omit", type=int, default=0, help="seconds at the start left out of the figures"
    )
    client.add_argument(
        "--get-server-output", action="store_true", help="show the server's report too"
    )
    client.add_argument(
        "--udp-counters-64bit", action="store_true", help="64-bit UDP sequence numbers"
    )
    client.add_argument(
        "--depth", type=positive_int, default=1, help="latency: requests in flight per connection"
    )
    client.add_argument("--plot", metavar="FILE.png", help="save a plot (needs matplotlib)")
    client.add_argument("--simulate-loss", type=fraction, default=0.0, help=argparse.SUPPRESS)
    client.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    add_wait_for_server(client)
    _shared(client)
    client.set_defaults(run=run_client)


@contextlib.contextmanager
def _output(args: argparse.Namespace, env: Env) -> Iterator[TextIO]:
    if not args.logfile:
        yield env.stdout
        return
    try:
        log = open(args.logfile, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise UsageError(f"cannot open the log file {args.logfile}: {exc.strerror}") from exc
    with log:
        yield log


@contextlib.contextmanager
def _first_interrupt_ends_the_test() -> Iterator[threading.Event]:
    """Ctrl-C ends the test (``-t 0`` runs until then) and the results print;
    a second Ctrl-C interrupts for good, as iperf3 does."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_interrupt(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run_server(args: argparse.Namespace, env: Env) -> int:
    from ..bench import BenchServer

    if args.interval <= 0:
        raise UsageError("--interval must be above 0")
    with _output(args, env) as out:
        server = BenchServer.bind(
            args.host or None,
            args.port,
            family_from_flags(args.ipv4, args.ipv6),
            log=env.stderr if args.verbose else None,
            out=out,
            once=args.once,
            json_output=args.json,
            interval=args.interval,
        )
        out.write(f"Bench server listening on port {server.port}\n")
        out.flush()
        try:
            server.serve_forever()
        finally:
            server.stop()
    return 0


def run_client(args: argparse.Namespace, env: Env) -> int:
    from ..bench import BenchConfig, IntervalPrinter, plot, run_bench, summary_table

    mode = "udp" if args.udp else "latency" if args.latency else "tcp"
    if mode == "latency" and (args.reverse or args.bidir):
        raise UsageError("-R and --bidir apply to throughput tests, not --latency")
    host = args.host[1:-1] if args.host.startswith("[") else args.host
    config = BenchConfig(
        host=host,
        port=args.port,
        family=family_from_flags(args.ipv4, args.ipv6),
        mode=mode,
        streams=args.parallel,
        duration=args.time,
        num_bytes=args.bytes,
        blocks=args.blockcount,
        length=args.length,
        reverse=args.reverse,
        bidir=args.bidir,
        bitrate=args.bitrate,
        window=args.window,
        omit=args.omit,
        depth=args.depth,
        interval=args.interval,
        get_server_output=args.get_server_output,
        udp_counters_64bit=args.udp_counters_64bit,
        simulate_loss=args.simulate_loss,
        seed=args.seed,
        wait_for_server=args.wait_for_server,
    )
    config.check()  # refuse -u -l 70000 and the like before connecting
    if mode == "latency" and config.duration == 0:
        raise UsageError("--latency needs a duration (-t above 0)")
    with _output(args, env) as out:
        printer = None
        if not args.json:
            out.write(f"Connecting to host {host}, port {args.port}\n")
            printer = IntervalPrinter(out, latency=mode == "latency", duration=config.duration)
        with _first_interrupt_ends_the_test() as stop:
            doc = run_bench(config, printer, stop)
        if printer is not None:
            printer.finish()
        if args.plot:
            plot(doc, args.plot)
            doc["plot"] = args.plot
        if args.json:
            out.write(json.dumps(doc, indent=2) + "\n")
        else:
            out.write(summary_table(doc) + "\n")
            if "server_output_text" in doc:
                out.write("\nServer output:\n" + doc["server_output_text"])
        out.flush()
    return 0
