"""``socketkit connect``, ``socketkit listen`` and ``socketkit nc``: netcat, done right.

Standard input goes to the socket, the socket to standard output, bytes
untouched. End of standard input half-closes the connection (shutdown of
the write side) and the command keeps reading until the peer closes; ``-q
SECS`` stops waiting after SECS (``-q 0``: close at once, for servers that
never close). All of it is ``socketkit.relay``: ``connect`` is a relay
from stdio to the remote address, ``listen`` a relay from a listener to
stdio, a program (``-e``/``-c``) or the other clients (``--broker``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TextIO

from .._sockets import connect_socket
from ..address import (
    InetEndpoint,
    UnixEndpoint,
    parse_port,
    require_unix_sockets,
)
from ..errors import AddressError, ConnectError, SocketkitError, UsageError
from ..relay import (
    AccessList,
    CrlfEncoder,
    ExecCommand,
    HexDumper,
    LinkOptions,
    OpenOptions,
    RelayAddress,
    RelaySettings,
    run_relay,
)
from ..server import Limits, ServerLog
from ..tls import client_context as tls_client_context
from ..tls import server_context as tls_server_context
from ._common import (
    Env,
    access_list,
    add_access_options,
    add_common_options,
    nonnegative_float,
    positive_int,
)
from ._flags import family_from_flags
from ._tls import add_tls_arguments, settings_from_args

__all__ = ["add_parsers"]

#: listen's default port: the lecture's (every original program uses 8080).
DEFAULT_LISTEN_PORT = 8080


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = sub.add_parser(
        "connect",
        help="connect to HOST PORT: standard input to the socket, the socket to standard output",
        description="Connect and copy standard input to the connection and the connection "
        "to standard output (netcat). End of input half-closes; the command ends when the "
        "peer closes.",
    )
    connect.add_argument("host", metavar="HOST", help="host name or address (-U: a socket path)")
    connect.add_argument(
        "port", metavar="PORT", nargs="?", help="port (with -z also a range LO-HI)"
    )
    _add_options(connect, listen=False)
    connect.set_defaults(run=run_connect)

    listen = sub.add_parser(
        "listen",
        help="accept a connection on PORT: the socket to standard output, standard input to it",
        description="Listen, accept one connection (or many with -k) and copy it to standard "
        "output and standard input to it; or run a program on it (-e/-c); or relay between "
        "clients (--broker). -v prints 'listening on port N' when ready.",
    )
    listen.add_argument(
        "where",
        metavar="[HOST] [PORT]",
        nargs="*",
        help="address to bind (default every interface) and port (default -p)",
    )
    _add_options(listen, listen=True)
    listen.set_defaults(run=run_listen)

    nc = sub.add_parser(
        "nc",
        help="netcat-style: 'nc HOST PORT' connects, 'nc -l [-p PORT]' listens",
        description="An alias of connect and listen with netcat's argument order.",
    )
    nc.add_argument("-l", "--listen", action="store_true", help="listen instead of connecting")
    nc.add_argument("where", metavar="[HOST] [PORT]", nargs="*", help="where to connect or bind")
    _add_options(nc, listen=True)
    nc.set_defaults(run=run_nc)


def _add_options(p: argparse.ArgumentParser, *, listen: bool) -> None:
    if listen:
        p.add_argument(
            "-p",
            "--port",
            dest="listen_port",
            metavar="PORT",
            help=f"port to listen on (default {DEFAULT_LISTEN_PORT}; 0: any free port)",
        )
    p.add_argument("-u", "--udp", action="store_true", help="UDP instead of TCP")
    p.add_argument("-U", "--unixsock", action="store_true", help="a Unix domain socket path")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    family.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    p.add_argument(
        "-w",
        "--wait",
        type=nonnegative_float,
        metavar="SECS",
        help="connect timeout, and idle timeout: end after SECS with no data either way",
    )
    p.add_argument(
        "-q",
        "--linger",
        type=nonnegative_float,
        metavar="SECS",
        help="after end of input, wait at most SECS for the peer to close (0: at once; "
        "default: until it does)",
    )
    p.add_argument(
        "-z", "--zero", action="store_true", help="only check that a connection can be made"
    )
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--send-only", action="store_true", help="only send; ignore input")
    direction.add_argument(
        "--recv-only", action="store_true", help="only receive; do not read standard input"
    )
    p.add_argument("--crlf", action="store_true", help="send line endings as CRLF")
    p.add_argument("--hex-dump", metavar="FILE", help="write a hex dump of the traffic to FILE")
    p.add_argument("-x", action="store_true", dest="hex_stderr", help="hex dump to stderr")
    p.add_argument(
        "-e", "--exec", metavar="PROG", help="run PROG with the connection as stdin/stdout"
    )
    p.add_argument(
        "-c", "--sh-exec", metavar="CMD", help="run CMD with /bin/sh, connected the same way"
    )
    if listen:
        p.add_argument(
            "-k", "--keep-open", action="store_true", help="accept many connections, not one"
        )
        p.add_argument(
            "--broker", action="store_true", help="chat: what each client sends goes to all others"
        )
        p.add_argument(
            "-m", "--max-conns", type=positive_int, metavar="N", help="at most N clients at once"
        )
        add_access_options(p)
    add_common_options(p)
    add_tls_arguments(p, "both")


# ---------------------------------------------------------------------- helpers


def _family(args: argparse.Namespace) -> int:
    return family_from_flags(args.ipv4, args.ipv6)


def _log(args: argparse.Namespace, env: Env) -> ServerLog:
    return ServerLog(env.stderr, env.stderr, verbose=args.verbose)


def _exec_command(args: argparse.Namespace) -> ExecCommand | None:
    if args.exec and args.sh_exec:
        raise UsageError("choose one of -e/--exec and -c/--sh-exec")
    command = None
    if args.exec:
        command = ExecCommand.program(args.exec)
    elif args.sh_exec:
        command = ExecCommand.shell_line(args.sh_exec)
    if command is not None:
        command.check()
    return command


def _link_options(args: argparse.Namespace, env: Env) -> LinkOptions:
    opts = LinkOptions(
        a_to_b=not args.recv_only,
        b_to_a=not args.send_only,
        idle_timeout=args.wait if args.wait else None,
        eof_linger=args.linger,
    )
    if args.crlf:
        opts.transform = CrlfEncoder().feed
    dump_to: TextIO | None = None
    if args.hex_dump:
        try:
            dump_to = open(args.hex_dump, "a", encoding="ascii")  # noqa: SIM115 (process lifetime)
        except OSError as exc:
            raise UsageError(f"--hex-dump: cannot open {args.hex_dump}: {exc.strerror}") from exc
    elif args.hex_stderr:
        dump_to = env.stderr
    if dump_to is not None:
        dumper = HexDumper()
        stream = dump_to

        def observe(direction: str, data: bytes) -> None:
            text = dumper.feed(direction, data)
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass

        opts.observer = observe
    return opts


def _tls(args: argparse.Namespace, env: Env, role: str) -> OpenOptions:
    opts = OpenOptions(family=_family(args), log=_log(args, env))
    if not args.tls:
        extra = [f for f, v in (("--cert", args.cert), ("--ca-file", args.ca_file)) if v]
        extra += [f for f, v in (("--insecure", args.insecure), ("--sni", args.sni)) if v]
        extra += ["--self-signed"] if args.self_signed else []
        if extra:
            raise UsageError(f"{extra[0]} needs --tls")
        return opts
    if args.udp or args.unixsock:
        raise UsageError("--tls works over TCP only (not with -u or -U)")
    settings = settings_from_args(args)
    if role == "client":
        opts.tls_client = tls_client_context(settings, warn=env.stderr)
        opts.server_hostname = settings.server_name
    else:
        opts.tls_server = tls_server_context(settings, info=env.stderr)
    return opts


def _remote(args: argparse.Namespace, host: str, port: str | None) -> RelayAddress:
    kind = "tls" if args.tls else ("udp" if args.udp else "tcp")
    if args.unixsock:
        require_unix_sockets()
        if port is not None:
            raise UsageError("-U takes a socket path and no port")
        if args.udp:
            raise UsageError("-U with -u (Unix datagram) is not supported by connect yet")
        return RelayAddress("unix", UnixEndpoint(host), text=f"unix:{host}")
    if port is None:
        raise UsageError("connect needs HOST and PORT (see --help)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UsageError("the host must not be empty")
    endpoint = InetEndpoint(host, parse_port(port))
    return RelayAddress(kind, endpoint, text=f"{kind}:{endpoint}")


def _settings(args: argparse.Namespace, env: Env, role: str) -> RelaySettings:
    open_opts = _tls(args, env, role)
    open_opts.connect_timeout = args.wait if args.wait else None
    access = access_list(args) if role == "server" else AccessList()
    return RelaySettings(
        open=open_opts,
        link=_link_options(args, env),
        keep_open=getattr(args, "keep_open", False),
        limits=Limits(max_conns=getattr(args, "max_conns", None)),
        access=access,
        broker=getattr(args, "broker", False),
    )


def _stdio_or_exec(args: argparse.Namespace) -> RelayAddress | ExecCommand:
    command = _exec_command(args)
    if command is not None:
        return command
    return RelayAddress("stdio", text="stdio")


# ---------------------------------------------------------------------- commands


def run_connect(args: argparse.Namespace, env: Env) -> int:
    if args.zero:
        return _probe(args, env)
    remote = _remote(args, args.host, args.port)
    settings = _settings(args, env, "client")
    local = _stdio_or_exec(args)
    try:
        if isinstance(local, ExecCommand):
            return run_relay(remote, local, settings)
        return run_relay(local, remote, settings)
    finally:
        _flush(env)


def _port_range(text: str) -> list[int]:
    lo, dash, hi = text.partition("-")
    if not dash:
        return [parse_port(text)]
    first, last = parse_port(lo), parse_port(hi)
    if first > last:
        raise AddressError(f"invalid port range {text!r}: {first} > {last}")
    return list(range(first, last + 1))


def _probe(args: argparse.Namespace, env: Env) -> int:
    """-z: connect and close at once; report each port with -v; 0 if any is open."""
    if args.port is None and not args.unixsock:
        raise UsageError("connect -z needs HOST and PORT (or LO-HI)")
    if args.udp:
        raise UsageError("-z probes TCP (UDP has no connection to make)")
    log = _log(args, env)
    if args.unixsock:
        targets: list[InetEndpoint | UnixEndpoint] = [UnixEndpoint(args.host)]
    else:
        host = args.host[1:-1] if args.host.startswith("[") else args.host
        targets = [InetEndpoint(host, port) for port in _port_range(args.port)]
    timeout = args.wait if args.wait else 5.0
    open_count = 0
    last_error: SocketkitError | None = None
    for target in targets:
        try:
            sock = connect_socket(target, family=_family(args), timeout=timeout)
        except SocketkitError as exc:
            if isinstance(exc, AddressError):
                raise
            last_error = exc
            if len(targets) > 1:
                log.event(f"{target}: closed ({exc})", "probe", True)
            continue
        sock.close()
        open_count += 1
        log.event(f"connection to {target} succeeded", "probe", True)
    if open_count:
        return 0
    assert last_error is not None
    if len(targets) == 1:
        raise last_error
    raise ConnectError(f"no port open on {args.host} in {args.port}") from last_error


def _listen_address(args: argparse.Namespace, where: list[str]) -> RelayAddress:
    kind = "tls-listen" if args.tls else ("udp-listen" if args.udp else "tcp-listen")
    if args.unixsock:
        require_unix_sockets()
        if len(where) != 1 or args.listen_port:
            raise UsageError("listen -U takes one socket path (and no -p)")
        if args.udp:
            raise UsageError("-U with -u (Unix datagram) is not supported by listen yet")
        return RelayAddress("unix-listen", UnixEndpoint(where[0]), text=f"unix-listen:{where[0]}")
    host: str | None = None
    port_text: str | None = args.listen_port
    if len(where) > 2:
        raise UsageError("listen takes at most HOST and PORT")
    if len(where) == 2:
        host, port_text = where[0], where[1] if port_text is None else port_text
        if args.listen_port is not None and where[1] != args.listen_port:
            raise UsageError("give the port once: either -p PORT or HOST PORT")
    elif len(where) == 1:
        if where[0].isdigit() and port_text is None:
            port_text = where[0]
        else:
            host = where[0]
    if host is not None and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = DEFAULT_LISTEN_PORT if port_text is None else parse_port(port_text)
    endpoint = InetEndpoint(host or None, port)
    return RelayAddress(kind, endpoint, text=f"{kind}:{endpoint}")


def run_listen(args: argparse.Namespace, env: Env) -> int:
    if args.zero:
        raise UsageError("-z is for connect (it probes a remote port)")
    address = _listen_address(args, args.where)
    settings = _settings(args, env, "server")
    other = _stdio_or_exec(args)
    if args.broker and isinstance(other, ExecCommand):
        raise UsageError("--broker and -e/-c do not mix")
    if args.max_conns and not (args.keep_open or args.broker):
        raise UsageError("--max-conns needs -k (or --broker)")
    if args.broker:
        settings.keep_open = True
    try:
        return run_relay(address, other, settings)
    finally:
        _flush(env)


def run_nc(args: argparse.Namespace, env: Env) -> int:
    if args.listen:
        return run_listen(args, env)
    if args.listen_port is not None:
        raise UsageError("-p is the port to listen on; use 'nc HOST PORT' to connect")
    for flag in ("keep_open", "broker", "max_conns"):
        if getattr(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} needs -l")
    if args.allow or args.deny:
        raise UsageError("--allow/--deny need -l")
    if not args.where or len(args.where) > 2:
        raise UsageError("nc needs HOST PORT to connect, or -l to listen")
    args.host = args.where[0]
    args.port = args.where[1] if len(args.where) > 1 else None
    return run_connect(args, env)


def _flush(env: Env) -> None:
    for stream in (env.stderr, sys.stdout):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
