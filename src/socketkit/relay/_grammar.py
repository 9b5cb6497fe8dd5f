"""The relay address grammar: what ``socketkit relay A B`` accepts (sans-I/O).

Grammar (kinds are case-insensitive, as in socat)::

    ADDRESS  := KIND [":" ARGS] ("," OPTION)*
    OPTION   := NAME ["=" VALUE]

    tcp:HOST:PORT            connect over TCP ([v6]:PORT for IPv6 literals)
    tcp-listen:[HOST:]PORT   accept one TCP connection (many with ``fork``)
    udp:HOST:PORT            a connected UDP socket
    udp-listen:[HOST:]PORT   bind, then talk to the first peer that sends
    unix:PATH                connect to a Unix stream socket
    unix-listen:PATH         accept on a Unix stream socket
    tls:HOST:PORT            TCP, then a TLS client handshake
    tls-listen:[HOST:]PORT   accept TCP, then a TLS server handshake
    stdio | -                standard input and output
    exec:CMD                 run CMD (split like a shell would, no shell);
                             everything after "exec:" is the command, so
                             commas in it need no quoting and no options apply

    socks5:PROXY:PPORT:HOST:PORT      HOST:PORT through a SOCKS5 proxy (RFC 1928)
    socks4a:PROXY:PPORT:HOST:PORT     ... SOCKS4a (the proxy resolves HOST)
    socks4:PROXY:PPORT:HOST:PORT      ... SOCKS4 (HOST resolved here)
    http-connect:PROXY:PPORT:HOST:PORT  ... an HTTP proxy's CONNECT
    socks4:PROXY:HOST:PORT, socks4a:..., socks5:..., proxy:PROXY:HOST:PORT
                             socat's spellings: the proxy's port is then
                             ``socksport=`` (default 1080) or, for ``proxy:``
                             (HTTP CONNECT), ``proxyport=`` (default 8080)
    proxy-listen:[HOST:]PORT a SOCKS4/4a/5 and HTTP proxy server, the same as
                             ``socketkit proxy`` (HOST defaults to 127.0.0.1);
                             each client names its own other side

Proxy options: ``auth=USER:PASS`` (socat: ``proxyauth=`` for HTTP,
``socksuser=`` for a SOCKS4 user id), ``dns=local|remote|both|none`` (where
HOST is resolved, as ncat's ``--proxy-dns``; socat's ``resolve`` is
``dns=local``). ``proxy-listen`` takes ``auth=``, ``allow-dest=RULE`` and
``deny-dest=RULE`` (repeatable), as ``socketkit proxy`` does.

Options: ``fork`` (listeners: serve every connection, each with its own
other side), ``reuseaddr`` (accepted for socat users; always on), ``4``/``6``
(address family), ``backlog=N``; TLS: ``cert=``, ``key=``, ``cafile=``,
``verify=0|1``, ``sni=NAME``, ``alpn=P1:P2``, ``self-signed``.

socat's names are understood too (case-insensitive, as socat reads them),
for the same addresses: ``TCP4:``/``TCP6:`` (``tcp:`` with option 4/6),
``TCP-CONNECT:``, ``TCP4-LISTEN:``/``TCP6-LISTEN:``/``TCP-L:``, the same for
UDP, ``UNIX-CONNECT:``, ``UNIX-L:``, ``OPENSSL:``/``OPENSSL-CONNECT:``/``SSL:``
(``tls:``), ``OPENSSL-LISTEN:``/``SSL-L:`` (``tls-listen:``), ``STDIO``,
``SYSTEM:CMD`` (``exec`` through ``/bin/sh -c``); options ``bind=HOST`` on a
listener (the address to listen on), ``pf=ip4|ip6`` (options 4/6),
``snihost=`` (``sni=``). A socat option socketkit lacks, such as ``bind=``
on a connecting address (the source address), is refused by name.

Nothing here opens a socket or resolves a name: text in, a frozen
``RelayAddress`` out, or an ``AddressError`` with a one-line message.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..address import InetEndpoint, UnixEndpoint, parse_endpoint, parse_port
from ..errors import AddressError

__all__ = [
    "KINDS",
    "KIND_ALIASES",
    "PROXY_KINDS",
    "PROXY_LISTEN_HOST",
    "RelayAddress",
    "parse_relay_address",
]

#: kind -> (is a listener, transport)
KINDS: dict[str, tuple[bool, str]] = {
    "tcp": (False, "tcp"),
    "tcp-listen": (True, "tcp"),
    "udp": (False, "udp"),
    "udp-listen": (True, "udp"),
    "unix": (False, "unix"),
    "unix-listen": (True, "unix"),
    "tls": (False, "tls"),
    "tls-listen": (True, "tls"),
    "stdio": (False, "stdio"),
    "exec": (False, "exec"),
    "socks4": (False, "proxy"),
    "socks4a": (False, "proxy"),
    "socks5": (False, "proxy"),
    "http-connect": (False, "proxy"),
    "proxy": (False, "proxy"),
    "proxy-listen": (True, "proxy"),
}

#: socat's address names -> (our kind, options they imply).
KIND_ALIASES: dict[str, tuple[str, tuple[tuple[str, str | None], ...]]] = {
    "tcp-connect": ("tcp", ()),
    "tcp4": ("tcp", (("4", None),)),
    "tcp6": ("tcp", (("6", None),)),
    "tcp4-connect": ("tcp", (("4", None),)),
    "tcp6-connect": ("tcp", (("6", None),)),
    "tcp-l": ("tcp-listen", ()),
    "tcp4-listen": ("tcp-listen", (("4", None),)),
    "tcp6-listen": ("tcp-listen", (("6", None),)),
    "tcp4-l": ("tcp-listen", (("4", None),)),
    "tcp6-l": ("tcp-listen", (("6", None),)),
    "udp-connect": ("udp", ()),
    "udp4": ("udp", (("4", None),)),
    "udp6": ("udp", (("6", None),)),
    "udp4-connect": ("udp", (("4", None),)),
    "udp6-connect": ("udp", (("6", None),)),
    "udp-l": ("udp-listen", ()),
    "udp4-listen": ("udp-listen", (("4", None),)),
    "udp6-listen": ("udp-listen", (("6", None),)),
    "udp4-l": ("udp-listen", (("4", None),)),
    "udp6-l": ("udp-listen", (("6", None),)),
    "unix-connect": ("unix", ()),
    "unix-l": ("unix-listen", ()),
    "openssl": ("tls", ()),
    "openssl-connect": ("tls", ()),
    "ssl": ("tls", ()),
    "openssl-listen": ("tls-listen", ()),
    "ssl-l": ("tls-listen", ()),
}
#: socat's option names -> ours; ``pf`` maps by value (ip4 -> 4).
_OPTION_ALIASES = {"snihost": "sni"}
_PF_VALUES = {"ip4": "4", "ipv4": "4", "inet": "4", "ip6": "6", "ipv6": "6", "inet6": "6"}

#: Proxy client kinds: (protocol, where HOST is resolved by default, the
#: proxy's default port in socat's three-field form).
PROXY_KINDS: dict[str, tuple[str, str, int]] = {
    "socks4": ("socks4", "local", 1080),
    "socks4a": ("socks4", "remote", 1080),
    "socks5": ("socks5", "remote", 1080),
    "http-connect": ("http", "remote", 8080),
    "proxy": ("http", "remote", 8080),
}
#: Where ``proxy-listen:PORT`` binds without a host: loopback, as ``socketkit proxy``.
PROXY_LISTEN_HOST = "127.0.0.1"
_DNS_POLICIES = ("local", "remote", "both", "none")

_FLAG_OPTIONS = {"fork", "reuseaddr", "4", "6", "self-signed", "resolve"}
_VALUE_OPTIONS = {
    "backlog",
    "cert",
    "key",
    "cafile",
    "verify",
    "sni",
    "alpn",
    "bind",
    "pf",
    "auth",
    "proxyauth",
    "socksuser",
    "socksport",
    "proxyport",
    "dns",
    "allow-dest",
    "deny-dest",
}
_TLS_OPTIONS = {"cert", "key", "cafile", "verify", "sni", "alpn", "self-signed"}
#: Options of proxy kinds only: clients, the proxy listener, or both.
_PROXY_CLIENT_OPTIONS = {"proxyauth", "socksuser", "socksport", "proxyport", "dns", "resolve"}
_PROXY_LISTEN_OPTIONS = {"allow-dest", "deny-dest"}


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """One side of a relay, parsed.

    ``endpoint`` is set for tcp/udp/unix/tls kinds; ``argv`` for exec.
    ``options`` keeps the options as written (names lower-cased).
    """

    kind: str
    endpoint: InetEndpoint | UnixEndpoint | None = None
    argv: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = field(default=())
    text: str = ""
    #: For proxy client kinds: where the proxy (``endpoint``) is asked to connect.
    target: InetEndpoint | None = None

    @property
    def listener(self) -> bool:
        return KINDS[self.kind][0]

    @property
    def transport(self) -> str:
        return KINDS[self.kind][1]

    @property
    def fork(self) -> bool:
        return self.has("fork")

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.options)

    def get(self, name: str, default: str | None = None) -> str | None:
        for n, v in self.options:
            if n == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of a repeatable option, in order."""
        return [v for n, v in self.options if n == name and v is not None]

    def __str__(self) -> str:
        return self.text


def _bad(text: str, why: str) -> AddressError:
    return AddressError(f"invalid relay address {text!r}: {why}")


def _parse_options(text: str, kind: str, parts: list[str]) -> tuple[tuple[str, str | None], ...]:
    options: list[tuple[str, str | None]] = []
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        name = _OPTION_ALIASES.get(name, name)
        if not name:
            raise _bad(text, "empty option")
        if name == "pf":
            if value.lower() not in _PF_VALUES:
                raise _bad(text, f"pf must be ip4 or ip6, got {value!r}")
            name, eq, value = _PF_VALUES[value.lower()], "", ""
        if name in _FLAG_OPTIONS:
            if eq:
                raise _bad(text, f"option {name!r} takes no value")
            options.append((name, None))
        elif name in _VALUE_OPTIONS:
            if not eq or not value:
                raise _bad(text, f"option {name!r} needs a value ({name}=...)")
            options.append((name, value))
        else:
            known = ", ".join(sorted(_FLAG_OPTIONS | _VALUE_OPTIONS))
            raise _bad(text, f"unknown option {name!r} (known: {known})")
        if name in _TLS_OPTIONS and kind not in ("tls", "tls-listen"):
            raise _bad(text, f"option {name!r} applies to tls and tls-listen only")
        if name in _PROXY_CLIENT_OPTIONS and kind not in PROXY_KINDS:
            raise _bad(text, f"option {name!r} applies to proxy addresses (socks5:, ...) only")
        if name in _PROXY_LISTEN_OPTIONS and kind != "proxy-listen":
            raise _bad(text, f"option {name!r} applies to proxy-listen only")
        if name == "auth" and KINDS[kind][1] != "proxy":
            raise _bad(text, "option 'auth' applies to proxy addresses only")
        if name in ("socksport", "proxyport"):
            assert value is not None
            try:
                parse_port(value)
            except AddressError as exc:
                raise _bad(text, f"{name}: {exc}") from None
        if name in ("auth", "proxyauth") and ":" not in (value or ""):
            raise _bad(text, f"{name} takes USER:PASS")
        if name == "dns" and value not in _DNS_POLICIES:
            raise _bad(text, f"dns must be one of {', '.join(_DNS_POLICIES)}, got {value!r}")
        if name in ("fork", "backlog") and not KINDS[kind][0]:
            raise _bad(text, f"option {name!r} applies to listeners only")
        if name == "bind" and not (KINDS[kind][0] and KINDS[kind][1] != "unix"):
            raise _bad(
                text,
                "option 'bind' is supported on tcp, udp and tls listeners only "
                "(a connecting address cannot choose its source address here)",
            )
        if name == "backlog":
            assert value is not None
            if not value.isdigit() or not value.isascii():
                raise _bad(text, f"backlog must be a whole number, got {value!r}")
        if name == "verify" and value not in ("0", "1"):
            raise _bad(text, f"verify must be 0 or 1, got {value!r}")
    return tuple(options)


def parse_relay_address(text: str) -> RelayAddress:
    """Parse one relay address (see the module docstring for the grammar).

    Raises:
        AddressError: unknown kind, malformed host/port/path, unknown option.
    """
    stripped = text.strip()
    if not stripped:
        raise AddressError("invalid relay address '': empty")
    if stripped == "-":
        return RelayAddress("stdio", text=text)
    head, colon, rest = stripped.partition(":")
    kind = head.strip().lower()
    if kind == "system":  # socat: the command runs through /bin/sh
        if not colon or not rest.strip():
            raise _bad(text, "system needs a command (system:CMD)")
        return RelayAddress("exec", argv=("/bin/sh", "-c", rest), text=text)
    if kind == "exec":
        if not colon or not rest.strip():
            raise _bad(text, "exec needs a command (exec:CMD)")
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as exc:
            raise _bad(text, f"cannot split the command: {exc}") from None
        if not argv:
            raise _bad(text, "exec needs a command (exec:CMD)")
        return RelayAddress("exec", argv=argv, text=text)
    if "," in kind:
        kind = kind.partition(",")[0]
        rest = ""
        parts = stripped.partition(",")[2].split(",")
        colon = ""
    else:
        parts = rest.split(",")
        rest, parts = parts[0], parts[1:]
    kind, implied = KIND_ALIASES.get(kind, (kind, ()))
    if kind not in KINDS:
        raise _bad(text, f"unknown kind {head.strip()!r} (known: {', '.join(KINDS)})")
    options = implied + _parse_options(text, kind, parts)
    if len({n for n, _ in options} & {"4", "6"}) > 1:
        raise _bad(text, "choose at most one of the options 4 and 6")
    bind = next((v for n, v in options if n == "bind"), None)
    options = tuple((n, v) for n, v in options if n != "bind")
    listener, transport = KINDS[kind]
    if kind == "stdio":
        if colon:
            raise _bad(text, "stdio takes no argument")
        return RelayAddress(kind, options=options, text=text)
    if not colon or not rest.strip():
        what = "PATH" if transport == "unix" else ("[HOST:]PORT" if listener else "HOST:PORT")
        if kind in PROXY_KINDS:
            what = "PROXY:PPORT:HOST:PORT"
        raise _bad(text, f"{kind} needs {what} ({kind}:{what})")
    if kind in PROXY_KINDS:
        return _proxy_address(text, kind, rest.strip(), options)
    endpoint: InetEndpoint | UnixEndpoint
    if kind == "proxy-listen":
        rest = rest.strip()
        listen_host = PROXY_LISTEN_HOST if bind is None else bind.strip().strip("[]")
        ep = parse_endpoint(rest, default_host=listen_host)
        if isinstance(ep, UnixEndpoint):
            raise _bad(text, "proxy-listen takes [HOST:]PORT")
        return RelayAddress(kind, endpoint=ep, options=options, text=text)
    if transport == "unix":
        endpoint = UnixEndpoint(rest)
    elif listener:
        rest = rest.strip()
        if rest.isdigit() or not rest.isascii():
            host = None
            if bind is not None:  # socat's TCP-LISTEN:PORT,bind=HOST
                host = bind.strip()
                if host.startswith("[") and host.endswith("]"):
                    host = host[1:-1]
            endpoint = InetEndpoint(host, parse_port(rest))
        elif bind is not None:
            raise _bad(text, "give the address once: HOST:PORT or PORT,bind=HOST")
        else:
            ep = parse_endpoint(rest, default_host=None)
            if isinstance(ep, UnixEndpoint):
                raise _bad(text, "a unix: path here; use unix-listen:PATH")
            endpoint = ep
    else:
        ep = parse_endpoint(rest, default_host=None)
        if isinstance(ep, UnixEndpoint):
            raise _bad(text, "a unix: path here; use unix:PATH")
        if ep.host is None:
            raise _bad(text, f"{kind} needs a host ({kind}:HOST:PORT)")
        endpoint = ep
    return RelayAddress(kind, endpoint=endpoint, options=options, text=text)


def _fields(text: str, rest: str) -> list[str]:
    """``rest`` split at colons outside brackets (``[::1]:1080:host:80``)."""
    fields, current, depth = [], "", 0
    for char in rest:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == ":" and depth == 0:
            fields.append(current)
            current = ""
        else:
            current += char
    fields.append(current)
    if depth != 0 or not all(fields):
        raise _bad(text, "expected PROXY:PPORT:HOST:PORT (IPv6 in brackets)")
    return fields


def _host(text: str, field: str) -> str:
    host = field[1:-1] if field.startswith("[") and field.endswith("]") else field
    endpoint = parse_endpoint(f"[{host}]:1" if ":" in host else f"{host}:1")
    if not isinstance(endpoint, InetEndpoint) or endpoint.host is None:
        raise _bad(text, f"{field!r} is not a host")
    return endpoint.host


def _proxy_address(
    text: str, kind: str, rest: str, options: tuple[tuple[str, str | None], ...]
) -> RelayAddress:
    """A proxy client address: four fields, or socat's three with a port option."""
    fields = _fields(text, rest)
    _protocol, _dns, default_port = PROXY_KINDS[kind]
    if len(fields) == 4:
        proxy_host, proxy_port, host, port = fields
    elif len(fields) == 3:
        proxy_host, host, port = fields
        named = dict(options)
        proxy_port = named.get("socksport") or named.get("proxyport") or str(default_port)
    else:
        raise _bad(text, f"{kind} needs PROXY:PPORT:HOST:PORT")
    endpoint = InetEndpoint(_host(text, proxy_host), parse_port(proxy_port))
    target = InetEndpoint(_host(text, host), parse_port(port))
    return RelayAddress(kind, endpoint=endpoint, options=options, text=text, target=target)
