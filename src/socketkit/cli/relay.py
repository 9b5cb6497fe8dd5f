"""``socketkit relay A B``: bytes both ways between any two addresses (socat-style).

Addresses use ``socketkit.relay``'s grammar: tcp:HOST:PORT,
tcp-listen:PORT, udp:HOST:PORT, udp-listen:PORT, unix:PATH,
unix-listen:PATH, tls:HOST:PORT, tls-listen:PORT, stdio (or -),
exec:CMD, with ``,fork`` and the other options after a comma. TLS options
on the command line apply to every tls/tls-listen address; options written
in the address (``tls:h:443,cafile=ca.pem``) take precedence. A listening
relay runs on the server engine and takes its options (limits, timeouts,
access control, PROXY protocol, workers, JSON logs).
"""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import UsageError
from ..relay import (
    ExecCommand,
    HexDumper,
    LinkOptions,
    OpenOptions,
    RelayAddress,
    RelaySettings,
    parse_relay_address,
    run_relay,
)
from ..server import Limits, ServerLog
from ..tls import TLSSettings, server_context
from ._common import (
    Env,
    access_list,
    add_access_options,
    add_common_options,
    nonnegative_float,
    positive_float,
    positive_int,
)
from ._tls import add_tls_arguments, client_context_warned, settings_from_args
from .proxy import run_proxy_listener

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "relay",
        help="relay between two addresses (tcp, udp, unix, tls, stdio, exec), both ways",
        description="Copy data both ways between two addresses until both directions end. "
        "Kinds: tcp:HOST:PORT tcp-listen:[HOST:]PORT udp:HOST:PORT udp-listen:[HOST:]PORT "
        "unix:PATH unix-listen:PATH tls:HOST:PORT tls-listen:[HOST:]PORT stdio exec:CMD "
        "socks4|socks4a|socks5|http-connect:PROXY:PPORT:HOST:PORT (socat's SOCKS4:, SOCKS4A:, "
        "PROXY: too) and, alone, proxy-listen:[HOST:]PORT (a SOCKS and HTTP proxy); "
        "options after commas: fork, 4, 6, backlog=N, cert=, key=, cafile=, verify=0|1, "
        "sni=, alpn=, self-signed. -v prints 'listening on port N' when ready.",
    )
    p.add_argument("first", metavar="A", help="first address (e.g. tcp-listen:8080,fork)")
    p.add_argument(
        "second",
        metavar="B",
        nargs="?",
        help="second address (e.g. tcp:127.0.0.1:80); none after proxy-listen:",
    )
    p.add_argument("-k", "--keep-open", action="store_true", help="same as ',fork' on the listener")
    p.add_argument(
        "-m", "--max-conns", type=positive_int, metavar="N", help="at most N connections at once"
    )
    p.add_argument(
        "-w",
        "--wait",
        type=nonnegative_float,
        metavar="SECS",
        help="connect timeout, and idle timeout per connection",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_float,
        metavar="S",
        help="close a connection with no data either way for S seconds (a stalled write "
        "counts as idle; UDP with fork: reclaim a client's socket, default 60)",
    )
    p.add_argument(
        "--drain-timeout",
        type=nonnegative_float,
        default=5.0,
        metavar="S",
        help="at shutdown, let connections finish for S seconds (default 5)",
    )
    p.add_argument(
        "--backlog", type=positive_int, metavar="N", help="listen backlog (default: system maximum)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="N processes share the listening port (SO_REUSEPORT; Linux and FreeBSD)",
    )
    p.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="accepted connections start with a PROXY protocol v1/v2 header",
    )
    add_access_options(p)
    p.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="text lines or JSON lines"
    )
    p.add_argument("--hex-dump", metavar="FILE", help="write a hex dump of the traffic to FILE")
    p.add_argument("-x", action="store_true", dest="hex_stderr", help="hex dump to stderr")
    add_common_options(p)
    add_tls_arguments(p, "both")
    p.set_defaults(run=run_relay_command)


def _tls_settings(base: TLSSettings, addr: RelayAddress) -> TLSSettings:
    alpn = addr.get("alpn")
    verify = addr.get("verify")
    return dataclasses.replace(
        base,
        certfile=addr.get("cert") or base.certfile,
        keyfile=addr.get("key") or base.keyfile,
        cafile=addr.get("cafile") or base.cafile,
        verify=base.verify if verify is None else verify == "1",
        server_name=addr.get("sni") or base.server_name,
        alpn=tuple(a for a in alpn.split(":") if a) if alpn else base.alpn,
        self_signed=base.self_signed or addr.has("self-signed"),
    )


def run_relay_command(args: argparse.Namespace, env: Env) -> int:
    a = parse_relay_address(args.first)
    if a.kind == "proxy-listen" or args.second is None:
        return run_proxy_listener(a, args, env)
    b_addr = parse_relay_address(args.second)
    if b_addr.kind == "proxy-listen":
        raise UsageError("relay: proxy-listen: stands alone (each client names its target)")
    b: RelayAddress | ExecCommand = b_addr
    if b_addr.kind == "exec":
        b = ExecCommand(b_addr.argv)
    if a.kind == "exec":
        if b_addr.kind == "exec":
            raise UsageError("relay: at most one side can be exec:")
        a, b = b_addr, ExecCommand(a.argv)
    if isinstance(b, ExecCommand):
        b.check()
    log = ServerLog(
        env.stderr, env.stderr, verbose=args.verbose, json_format=args.log_format == "json"
    )
    opts = OpenOptions(log=log, connect_timeout=args.wait or None)
    base = settings_from_args(args)
    sides = [a] + ([b] if isinstance(b, RelayAddress) else [])
    tls_sides = [s for s in sides if s.transport == "tls"]
    if not tls_sides and (args.cert or args.ca_file or args.insecure or args.self_signed):
        raise UsageError("TLS options need a tls: or tls-listen: address")
    for side in tls_sides:
        tls_settings = _tls_settings(base, side)
        if side.listener:
            opts.tls_server = server_context(tls_settings, info=env.stderr)
        else:
            opts.tls_client = client_context_warned(tls_settings, env.stderr)
            opts.server_hostname = tls_settings.server_name
    link = LinkOptions(idle_timeout=args.wait or None)
    if args.hex_dump or args.hex_stderr:
        try:
            stream = open(args.hex_dump, "a", encoding="ascii") if args.hex_dump else env.stderr  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"--hex-dump: cannot open {args.hex_dump}: {exc.strerror}") from exc
        dumper = HexDumper()

        def observe(direction: str, data: bytes) -> None:
            stream.write(dumper.feed(direction, data))
            stream.flush()

        link.observer = observe
    listeners = [s for s in sides if s.listener]
    keep_open = args.keep_open or any(s.fork for s in listeners)
    if keep_open:
        if not listeners:
            raise UsageError("-k/fork needs a listening address (tcp-listen:, unix-listen:, ...)")
        if len(listeners) > 1:
            raise UsageError("fork: only one side can listen when serving many connections")
        other = b if a.listener else a
        if isinstance(other, RelayAddress) and other.kind == "stdio":
            raise UsageError("fork: standard input/output cannot be shared by many connections")
    if args.workers > 1 and not keep_open:
        raise UsageError("--workers needs a listener with fork (or -k)")
    settings = RelaySettings(
        open=opts,
        link=link,
        keep_open=keep_open,
        limits=Limits(
            max_conns=args.max_conns,
            idle_timeout=args.idle_timeout,
            drain_timeout=args.drain_timeout,
        ),
        access=access_list(args),
        backlog=args.backlog,
        proxy_protocol=args.proxy_protocol,
        workers=args.workers,
    )
    return run_relay(a, b, settings)
