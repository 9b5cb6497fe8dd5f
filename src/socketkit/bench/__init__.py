"""An iperf-class benchmark with both ends in socketkit.

``BenchServer`` answers tests; ``run_bench(BenchConfig(...))`` runs one and
returns its JSON document: TCP throughput (parallel, reverse, both ways),
latency percentiles from a log-linear histogram (against any echo server),
UDP bitrate with loss, out-of-order and RFC 3550 jitter.
"""

from ._client import BenchConfig, IntervalSample, run_bench
from ._histogram import Histogram
from ._report import IntervalPrinter, format_bytes, format_rate, plot, summary_table
from ._server import BenchServer

__all__ = [
    "BenchConfig",
    "BenchServer",
    "Histogram",
    "IntervalPrinter",
    "IntervalSample",
    "format_bytes",
    "format_rate",
    "plot",
    "run_bench",
    "summary_table",
]
