"""Relays: endpoint grammar, openers, the two-way pump, exec, broker.

The programs behind ``socketkit connect``, ``listen`` and ``relay``. Layers,
bottom up: ``_grammar`` (sans-I/O address parser), ``_hexdump``
(sans-I/O), ``_channels`` (the two ends of a pump),
``_pump`` (the one copy loop, with Linux's splice fast path), ``_open``
(addresses to channels and listeners), ``_serve`` (accept loop, exec,
broker), ``_run`` (the whole program).
"""

from ._channels import (
    Channel,
    DatagramChannel,
    PipeChannel,
    SocketChannel,
    StdioChannel,
    TLSChannel,
)
from ._grammar import KINDS, RelayAddress, parse_relay_address
from ._hexdump import CrlfEncoder, HexDumper
from ._open import Accepted, Listener, Log, OpenOptions, open_channel, open_listener
from ._pump import BUFFER_SIZE, OutputClosedError, PumpOptions, PumpResult, pump
from ._run import RelaySettings, Terminated, run_relay, terminate_cleanly
from ._serve import ExecCommand, Hub, run_exec, serve

__all__ = [
    "BUFFER_SIZE",
    "KINDS",
    "Accepted",
    "Channel",
    "CrlfEncoder",
    "DatagramChannel",
    "ExecCommand",
    "HexDumper",
    "Hub",
    "Listener",
    "Log",
    "OpenOptions",
    "OutputClosedError",
    "PipeChannel",
    "PumpOptions",
    "PumpResult",
    "RelayAddress",
    "RelaySettings",
    "SocketChannel",
    "StdioChannel",
    "TLSChannel",
    "Terminated",
    "open_channel",
    "open_listener",
    "parse_relay_address",
    "pump",
    "run_exec",
    "run_relay",
    "serve",
    "terminate_cleanly",
]
