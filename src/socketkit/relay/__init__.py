"""Relays: endpoint grammar, openers, the two-way link, exec, broker, access control.

The programs behind ``socketkit connect``, ``listen`` and ``relay``, all on
one event loop (the server engine's). Layers, bottom up: ``_grammar``
(sans-I/O address parser), ``_access`` and ``_hexdump`` (sans-I/O),
``_link`` (the one copy loop: two sides, flow control, half-close),
``_sides`` (addresses to sides: sockets, TLS, UDP, standard I/O; through
a SOCKS or HTTP proxy with ``_proxy``),
``_exec`` (a program on a connection), ``_service`` (a relay as a service
of the server engine), ``_hub`` (``listen -k`` and ``--broker``),
``_datagram`` (UDP relays with fork), ``_run`` (the whole program).
"""

from ._access import AccessList, parse_network
from ._exec import ExecCommand
from ._grammar import KINDS, RelayAddress, parse_relay_address
from ._hexdump import CrlfEncoder, HexDumper
from ._link import Link, LinkOptions, LinkResult, OutputClosedError, SideProtocol
from ._run import RelaySettings, run_relay
from ._service import RelayProtocol, relay_factory
from ._sides import OpenOptions, connect_stream, open_side

__all__ = [
    "KINDS",
    "AccessList",
    "CrlfEncoder",
    "ExecCommand",
    "HexDumper",
    "Link",
    "LinkOptions",
    "LinkResult",
    "OpenOptions",
    "OutputClosedError",
    "RelayAddress",
    "RelayProtocol",
    "RelaySettings",
    "SideProtocol",
    "connect_stream",
    "open_side",
    "parse_network",
    "parse_relay_address",
    "relay_factory",
    "run_relay",
]
