"""Relays: endpoint grammar, openers, the two-way link, exec, broker.

The programs behind ``socketkit connect``, ``listen`` and ``relay``, all on
one event loop (the server engine's). A relay is two addresses
(``parse_relay_address``: ``tcp:host:port``, ``tcp-listen:port,fork``,
``stdio``, ``exec:cmd``...) and ``RelaySettings``, run by ``run_relay``.
Access control is ``socketkit.access``, shared with the servers.

Layers, bottom up: ``_grammar`` (sans-I/O address parser), ``_hexdump``
(sans-I/O), ``_link`` (the one copy loop: two sides, flow control,
half-close), ``_sides`` (addresses to sides: sockets, TLS, UDP, standard
I/O; through a SOCKS or HTTP proxy with ``_proxy``), ``_exec`` (a program
on a connection), ``_service`` (a relay as a
service of the server engine), ``_hub`` (``listen -k`` and the broker),
``_datagram`` (UDP relays with fork), ``_run`` (the whole program).
"""

from ._exec import ExecCommand
from ._grammar import KINDS, RelayAddress, parse_relay_address
from ._hexdump import CrlfEncoder, HexDumper
from ._link import LinkOptions
from ._proxy import proxy_spec
from ._run import RelaySettings, run_relay
from ._sides import OpenOptions

__all__ = [
    "KINDS",
    "CrlfEncoder",
    "ExecCommand",
    "HexDumper",
    "LinkOptions",
    "OpenOptions",
    "RelayAddress",
    "RelaySettings",
    "parse_relay_address",
    "proxy_spec",
    "run_relay",
]
