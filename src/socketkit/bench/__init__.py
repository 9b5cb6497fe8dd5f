"""An iperf-class benchmark that speaks iperf3's protocol.

``run_bench(BenchConfig(...))`` runs one test against any iperf3 3.x server
(or ``BenchServer``) and returns iperf3's JSON document: TCP throughput
(parallel, reverse, both ways), UDP bitrate with loss and RFC 3550 jitter.
``BenchServer`` answers iperf3 clients, many tests at once. The latency mode
(percentiles from a log-linear histogram, pipelining) runs against any echo
server and ``BenchServer``. The protocol itself is ``_protocol``, sans-I/O.
"""

from ._client import BenchConfig, run_bench
from ._histogram import Histogram
from ._protocol import ControlProtocol, ProtocolError, RefusedError, TestParams
from ._report import IntervalPrinter, format_bytes, format_rate, plot, summary_table, text_report
from ._server import BenchServer
from ._streams import IntervalSample, UdpStats

__all__ = [
    "BenchConfig",
    "BenchServer",
    "ControlProtocol",
    "Histogram",
    "IntervalPrinter",
    "IntervalSample",
    "ProtocolError",
    "RefusedError",
    "TestParams",
    "UdpStats",
    "format_bytes",
    "format_rate",
    "plot",
    "run_bench",
    "summary_table",
    "text_report",
]
