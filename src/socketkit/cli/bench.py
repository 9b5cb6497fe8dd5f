"""``socketkit bench server`` and ``socketkit bench client HOST``."""

from __future__ import annotations

import argparse
import json

from ._common import Env, add_common_options, nonnegative_float, port_number, positive_int
from ._flags import family_from_flags

__all__ = ["add_parsers"]

#: The bench's default port: iperf3's, so firewall rules written for it apply.
DEFAULT_BENCH_PORT = 5201


def bitrate(text: str) -> float:
    """``100M`` -> 100e6 bits per second (K, M, G: powers of 1000, as iperf3)."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a bitrate like 100M, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a bitrate above 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("expected a fraction in [0, 1)")
    return value


def _port_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=DEFAULT_BENCH_PORT,
        help=f"port (default {DEFAULT_BENCH_PORT})",
    )


def _family_flags(p: argparse.ArgumentParser) -> None:
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    family.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure throughput, latency, UDP loss and jitter (iperf-class)",
        description="An iperf-class benchmark, both ends in socketkit: run 'bench server' on "
        "one side and 'bench client HOST' on the other.",
    )
    roles = bench.add_subparsers(dest="role", metavar="ROLE", parser_class=type(bench))
    roles.required = True

    server = roles.add_parser("server", help="answer bench tests")
    server.add_argument("--host", default=None, help="address to bind (default: every interface)")
    _port_option(server)
    server.add_argument("-1", "--once", action="store_true", help="stop after one test")
    _family_flags(server)
    add_common_options(server)
    server.set_defaults(run=run_server)

    client = roles.add_parser("client", help="run a test against a bench server")
    client.add_argument("host", help="the bench server (any echo server for --latency)")
    _port_option(client)
    mode = client.add_mutually_exclusive_group()
    mode.add_argument("-u", "--udp", action="store_true", help="UDP: bitrate, loss, jitter")
    mode.add_argument("--latency", action="store_true", help="request/response latency (ping-pong)")
    client.add_argument(
        "-P", "--parallel", type=positive_int, default=1, help="streams or connections (default 1)"
    )
    client.add_argument(
        "-t", "--time", type=nonnegative_float, default=10.0, help="seconds (default 10)"
    )
    client.add_argument(
        "-l",
        "--length",
        type=positive_int,
        default=None,
        help="bytes per write (TCP 128 KiB), datagram (UDP 1460) or request (latency 64)",
    )
    client.add_argument("-R", "--reverse", action="store_true", help="the server sends")
    client.add_argument("--bidir", action="store_true", help="both directions at once")
    client.add_argument(
        "-b",
        "--bitrate",
        type=bitrate,
        default=None,
        help="target bits/s over all streams, e.g. 100M (UDP default 1M; TCP default unlimited)",
    )
    client.add_argument(
        "--depth", type=positive_int, default=1, help="requests in flight per connection"
    )
    client.add_argument(
        "-i", "--interval", type=nonnegative_float, default=1.0, help="seconds between reports"
    )
    client.add_argument(
        "--procs",
        type=positive_int,
        default=1,
        help="client processes sharing the streams (one Python process is about one core)",
    )
    client.add_argument("--json", action="store_true", help="print the result as JSON only")
    client.add_argument("--plot", metavar="FILE.png", help="save a plot (needs matplotlib)")
    client.add_argument("--simulate-loss", type=fraction, default=0.0, help=argparse.SUPPRESS)
    client.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    _family_flags(client)
    add_common_options(client)
    client.set_defaults(run=run_client)


def run_server(args: argparse.Namespace, env: Env) -> int:
    from ..bench import BenchServer

    family = family_from_flags(args.ipv4, args.ipv6)
    server = BenchServer.bind(
        args.host or None,
        args.port,
        family,
        log=env.stderr if args.verbose else None,
        once=args.once,
    )
    env.stdout.write(f"Bench server listening on port {server.port}\n")
    env.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def run_client(args: argparse.Namespace, env: Env) -> int:
    from ..bench import BenchConfig, IntervalPrinter, plot, run_bench, summary_table
    from ..errors import UsageError

    mode = "udp" if args.udp else "latency" if args.latency else "tcp"
    if mode != "tcp" and (args.reverse or args.bidir):
        raise UsageError("-R and --bidir apply to TCP throughput tests")
    if args.interval <= 0:
        raise UsageError("--interval must be above 0")
    host = args.host[1:-1] if args.host.startswith("[") else args.host
    config = BenchConfig(
        host=host,
        port=args.port,
        family=family_from_flags(args.ipv4, args.ipv6),
        mode=mode,
        streams=args.parallel,
        duration=args.time,
        length=args.length,
        reverse=args.reverse,
        bidir=args.bidir,
        bitrate=args.bitrate,
        depth=args.depth,
        interval=args.interval,
        procs=args.procs,
        simulate_loss=args.simulate_loss,
        seed=args.seed,
    )
    printer = None if args.json else IntervalPrinter(env.stdout, config)
    doc = run_bench(config, printer)
    if printer is not None:
        printer.finish()
    if args.plot:
        plot(doc, args.plot)
        doc["plot"] = args.plot
    if args.json:
        env.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        env.stdout.write(summary_table(doc) + "\n")
    env.stdout.flush()
    return 0
