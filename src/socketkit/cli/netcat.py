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
import socket
import sys
from collections.abc import Callable
from typing import IO, Any, TextIO, cast

from .._sockets import connect_socket
from .._tunnel import open_proxy_socket
from ..access import AccessList
from ..address import (
    InetEndpoint,
    UnixEndpoint,
    parse_port,
    require_unix_sockets,
)
from ..errors import AddressError, ConnectError, SocketkitError, UsageError
from ..relay import (
    CrlfEncoder,
    ExecCommand,
    HexDumper,
    LinkOptions,
    OpenOptions,
    RelayAddress,
    RelaySettings,
    proxy_spec,
    run_relay,
)
from ..server import Limits, ServerLog
from ..tls import server_context as tls_server_context
from ._common import (
    Env,
    access_list,
    add_access_options,
    add_common_options,
    is_ip_address,
    nonnegative_float,
    nonnegative_int,
)
from ._flags import family_from_flags
from ._proxy import add_proxy_client_options, proxied_address, proxy_from_openbsd_args
from ._tls import add_tls_arguments, client_context_warned, settings_from_args

__all__ = ["add_parsers"]

#: listen's default port: the lecture's (every original program uses 8080).
DEFAULT_LISTEN_PORT = 8080
#: Seconds ``-z -u`` waits for a closed port's "port unreachable" (without -w):
#: on a LAN it takes well under a millisecond; a second allows for a slow path.
UDP_PROBE_WAIT = 1.0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    connect = sub.add_parser(
        "connect",
        help="connect to HOST PORT: standard input to the socket, the socket to standard output",
        description="Connect and copy standard input to the connection and the connection "
        "to standard output (netcat). End of input half-closes; the command ends once the "
        "peer has closed and standard input has ended too, as ncat does (on a terminal: when "
        "the peer closes; -q SECS: at most SECS after end of input).",
    )
    connect.add_argument("host", metavar="HOST", help="host name or address (-U: a socket path)")
    connect.add_argument(
        "port", metavar="PORT", nargs="?", help="port (with -z also a range LO-HI)"
    )
    _add_options(connect, listen=False)
    add_proxy_client_options(connect)
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
        description="An alias of connect and listen with netcat's argument order. Where "
        "netcat variants differ, nc does what ncat does: -p is the source port when "
        "connecting, --max-conns turns extra clients away at once.",
    )
    nc.add_argument("-l", "--listen", action="store_true", help="listen instead of connecting")
    nc.add_argument("where", metavar="[HOST] [PORT]", nargs="*", help="where to connect or bind")
    _add_options(nc, listen=True)
    add_proxy_client_options(nc)
    nc.set_defaults(run=run_nc)


def _add_options(p: argparse.ArgumentParser, *, listen: bool) -> None:
    if listen:
        p.add_argument(
            "-p",
            "--port",
            dest="listen_port",
            metavar="PORT",
            help=f"port to listen on (default {DEFAULT_LISTEN_PORT}; 0: any free port); "
            "nc without -l: the source port to connect from, as ncat",
        )
    else:
        # No -p here: tcp-client's -p is the server's port; nc's -p is this one.
        p.add_argument(
            "--source-port",
            dest="source_port",
            metavar="PORT",
            help="connect from this local port (nc -p PORT, as ncat)",
        )
    p.add_argument(
        "-s",
        "--source",
        metavar="ADDR",
        help="connect from this local address; with -l, the address to listen on",
    )
    p.add_argument(
        "-n",
        "--nodns",
        action="store_true",
        help="numeric addresses only: never ask DNS for a host name",
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
        help="connect timeout, and idle timeout: end after SECS with no data either way "
        "(ncat's -w is the connect timeout only; -i is its idle timeout)",
    )
    p.add_argument(
        "-i",
        "--idle-timeout",
        type=nonnegative_float,
        metavar="SECS",
        help="end after SECS with no data either way (the connect timeout stays -w's)",
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
        "-z",
        "--zero",
        action="store_true",
        help="only check that a connection can be made (with -u: that no 'port unreachable' "
        "comes back)",
    )
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--send-only", action="store_true", help="only send; ignore input")
    direction.add_argument(
        "--recv-only", action="store_true", help="only receive; do not read standard input"
    )
    p.add_argument(
        "-C",
        "--crlf",
        action="store_true",
        help="send line endings as CRLF (standard input, or what -e/-c's program writes)",
    )
    p.add_argument(
        "--hex-dump",
        metavar="FILE",
        help="write a hex dump of the traffic to FILE (emptied first, as ncat; see --append-output)",
    )
    p.add_argument(
        "-x",
        action="store_true",
        dest="hex_stderr",
        help="hex dump to stderr (ncat's -x takes a FILE: use --hex-dump FILE)",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the session's bytes, both directions, to FILE"
    )
    p.add_argument(
        "--append-output", action="store_true", help="with -o/--hex-dump: append, not truncate"
    )
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
            "-m",
            "--max-conns",
            type=nonnegative_int,
            metavar="N",
            help="at most N clients at once: listen leaves the others waiting in the backlog; "
            "nc turns them away at once (accepted and closed, as ncat; 0: every one)",
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


def _idle_timeout(args: argparse.Namespace) -> float | None:
    """``-i SECS``, else ``-w SECS`` (which is also the connect timeout); 0: none."""
    timeout = args.idle_timeout if args.idle_timeout is not None else args.wait
    return timeout or None


def _open_log_file(option: str, path: str, append: bool, *, text: bool) -> IO[Any]:
    """A file that ``-o``/``--hex-dump`` write for the life of the process
    (truncated first, as ncat does, unless ``--append-output``)."""
    mode = ("a" if append else "w") + ("" if text else "b")
    try:
        if text:
            return open(path, mode, encoding="ascii")
        return open(path, mode, buffering=0)
    except OSError as exc:
        raise UsageError(f"{option}: cannot open {path}: {exc.strerror}") from exc


def _observers(args: argparse.Namespace, env: Env) -> list[Callable[[str, bytes], None]]:
    """Who sees each chunk of the session: the hex dump and ``-o``'s raw copy."""
    observers: list[Callable[[str, bytes], None]] = []
    dump_to: TextIO | None = None
    if args.hex_dump:
        dump_to = cast(
            TextIO, _open_log_file("--hex-dump", args.hex_dump, args.append_output, text=True)
        )
    elif args.hex_stderr:
        dump_to = env.stderr
    if dump_to is not None:
        dumper = HexDumper()
        stream = dump_to

        def dump(direction: str, data: bytes) -> None:
            text = dumper.feed(direction, data)
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass

        observers.append(dump)
    if args.output:
        raw = _open_log_file("--output", args.output, args.append_output, text=False)

        def copy(_direction: str, data: bytes) -> None:
            with contextlib.suppress(OSError, ValueError):
                raw.write(data)

        observers.append(copy)
    elif args.append_output and not args.hex_dump:
        raise UsageError("--append-output needs -o/--output or --hex-dump")
    return observers


def _link_options(args: argparse.Namespace, env: Env) -> LinkOptions:
    opts = LinkOptions(
        a_to_b=not args.recv_only,
        b_to_a=not args.send_only,
        idle_timeout=_idle_timeout(args),
        eof_linger=args.linger,
    )
    if args.crlf:
        opts.transform = CrlfEncoder().feed
    observers = _observers(args, env)
    if len(observers) == 1:
        opts.observer = observers[0]
    elif observers:

        def observe(direction: str, data: bytes) -> None:
            for observer in observers:
                observer(direction, data)

        opts.observer = observe
    return opts


def _numeric(args: argparse.Namespace, host: str | None, what: str) -> None:
    """With ``-n``, a host name is refused (it would need DNS)."""
    if args.nodns and host and not is_ip_address(host):
        raise UsageError(f"-n: {what} must be a numeric address, not {host!r}")


def _source(args: argparse.Namespace, port: str | None) -> tuple[str | None, int] | None:
    """``-s ADDR`` and the source port (``-p`` when connecting), or None."""
    host = args.source
    if host is None and port is None:
        return None
    if host is not None:
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not is_ip_address(host):
            raise UsageError(f"-s: the source must be a numeric address, not {host!r}")
    return host, 0 if port is None else parse_port(port)


def _tls(args: argparse.Namespace, env: Env, role: str) -> OpenOptions:
    opts = OpenOptions(family=_family(args), log=_log(args, env))
    if role == "client":
        opts.source = _source(args, getattr(args, "source_port", None))
        if opts.source is not None and opts.source[0] is not None and opts.family == 0:
            # Connect with the family of the source address.
            opts.family = socket.AF_INET6 if ":" in opts.source[0] else socket.AF_INET
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
        opts.tls_client = client_context_warned(settings, env.stderr)
        opts.server_hostname = settings.server_name
    else:
        opts.tls_server = tls_server_context(settings, info=env.stderr)
    return opts


def _remote(args: argparse.Namespace, host: str, port: str | None) -> RelayAddress:
    if (proxied := proxied_address(args, host, port)) is not None:
        if isinstance(proxied.endpoint, InetEndpoint):
            _numeric(args, proxied.endpoint.host, "the proxy")
        return proxied
    kind = "tls" if args.tls else ("udp" if args.udp else "tcp")
    if args.unixsock:
        require_unix_sockets()
        if port is not None:
            raise UsageError("-U takes a socket path and no port")
        if args.udp:
            # A datagram side at a Unix path: the relay's datagram kind takes
            # any endpoint (the client autobinds, so that replies reach it).
            return RelayAddress("udp", UnixEndpoint(host), text=f"unix-dgram:{host}")
        return RelayAddress("unix", UnixEndpoint(host), text=f"unix:{host}")
    if port is None:
        raise UsageError("connect needs HOST and PORT (see --help)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise UsageError("the host must not be empty")
    _numeric(args, host, "HOST")
    endpoint = InetEndpoint(host, parse_port(port))
    return RelayAddress(kind, endpoint, text=f"{kind}:{endpoint}")


def _settings(args: argparse.Namespace, env: Env, role: str) -> RelaySettings:
    open_opts = _tls(args, env, role)
    open_opts.connect_timeout = args.wait if args.wait else None
    access = access_list(args, resolve=not args.nodns) if role == "server" else AccessList()
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
    log = _log(args, env)
    opts = _tls(args, env, "client")
    if args.unixsock:
        targets: list[InetEndpoint | UnixEndpoint] = [UnixEndpoint(args.host)]
    else:
        host = args.host[1:-1] if args.host.startswith("[") else args.host
        _numeric(args, host, "HOST")
        targets = [InetEndpoint(host, port) for port in _port_range(args.port)]
    timeout = args.wait if args.wait else 5.0
    proxy = None
    if not args.unixsock:
        # Each port is probed through the proxy, as data would go.
        via = _remote(args, args.host, args.port.split("-")[0])
        proxy = proxy_spec(via) if via.target is not None else None
    open_count = 0
    last_error: SocketkitError | None = None
    if args.udp and not args.wait:
        timeout = UDP_PROBE_WAIT
    kind = socket.SOCK_DGRAM if args.udp else socket.SOCK_STREAM
    for target in targets:
        try:
            if proxy is not None:
                sock, _ = open_proxy_socket(
                    proxy, target, family=opts.family, connect_timeout=timeout
                )
            else:
                sock = connect_socket(
                    target, type=kind, family=opts.family, timeout=timeout, source=opts.source
                )
            if args.udp:
                _probe_datagram(sock, target, timeout)
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


def _probe_datagram(sock: socket.socket, target: object, wait: float) -> None:
    """-z -u: send an empty datagram and wait ``wait`` seconds for the port
    unreachable error a closed port answers with (ICMP, reported by the
    connected socket as ECONNREFUSED). No answer counts as open, as nc says:
    UDP cannot tell an open port from a filtered one.

    Raises:
        ConnectError: the port is closed (the socket is closed then).
    """
    try:
        sock.settimeout(wait)
        sock.send(b"")
        sock.recv(1)  # a reply: open
    except TimeoutError:
        pass
    except OSError as exc:
        sock.close()
        raise ConnectError(f"UDP port closed at {target} ({exc.strerror or exc})") from exc


def _listen_address(args: argparse.Namespace, where: list[str]) -> RelayAddress:
    kind = "tls-listen" if args.tls else ("udp-listen" if args.udp else "tcp-listen")
    if args.unixsock:
        require_unix_sockets()
        if len(where) != 1 or args.listen_port:
            raise UsageError("listen -U takes one socket path (and no -p)")
        if args.udp:
            path = where[0]
            return RelayAddress("udp-listen", UnixEndpoint(path), text=f"unix-dgram-listen:{path}")
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
    if args.source is not None:
        # -s with -l: the address to listen on (netcat's habit).
        if host is not None:
            raise UsageError("give the address to bind once: either -s ADDR or HOST")
        host = args.source
    if host is not None and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    _numeric(args, host, "the address to bind")
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
    if args.command == "nc":
        # ncat turns a client over the limit away at once, -k or not.
        settings.limits.turn_away = True
    elif args.max_conns is not None:
        if not (args.keep_open or args.broker):
            raise UsageError("--max-conns needs -k (or --broker)")
        if args.max_conns == 0:
            raise UsageError("--max-conns 0 would keep every client waiting (nc turns them away)")
    if args.broker:
        settings.keep_open = True
    if not isinstance(other, ExecCommand):
        # The client's end of stream ends the session, as ncat's listener does
        # (standard input may stay open for ever: `sleep 60 | nc -l`).
        settings.link.end_with_peer = True
    try:
        return run_relay(address, other, settings)
    finally:
        _flush(env)


def run_nc(args: argparse.Namespace, env: Env) -> int:
    args.where = proxy_from_openbsd_args(args, args.where)
    if args.listen:
        return run_listen(args, env)
    # Without -l, -p is the port to connect from (ncat's meaning).
    args.source_port, args.listen_port = args.listen_port, None
    for flag in ("keep_open", "broker"):
        if getattr(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} needs -l")
    if args.max_conns is not None:
        raise UsageError("--max-conns needs -l")
    if args.allow or args.deny or args.allowfile or args.denyfile:
        raise UsageError("--allow/--deny/--allowfile/--denyfile need -l")
    if not args.where or len(args.where) > 2:
        raise UsageError("nc needs HOST PORT to connect, or -l to listen")
    args.host = args.where[0]
    args.port = args.where[1] if len(args.where) > 1 else None
    return run_connect(args, env)


def _flush(env: Env) -> None:
    for stream in (env.stderr, sys.stdout):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
