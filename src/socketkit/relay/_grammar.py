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

__all__ = ["KINDS", "KIND_ALIASES", "RelayAddress", "parse_relay_address"]

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

_FLAG_OPTIONS = {"fork", "reuseaddr", "4", "6", "self-signed"}
_VALUE_OPTIONS = {"backlog", "cert", "key", "cafile", "verify", "sni", "alpn", "bind", "pf"}
_TLS_OPTIONS = {"cert", "key", "cafile", "verify", "sni", "alpn", "self-signed"}


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
        raise _bad(text, f"{kind} needs {what} ({kind}:{what})")
    endpoint: InetEndpoint | UnixEndpoint
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
