"""Reports of a bench run: interval lines, the summary table, and the plot.

Units follow iperf3: bytes in binary prefixes (KiB, MiB, GiB) and rates in
decimal bits per second (Mbit/s, Gbit/s), so the figures compare directly.
"""

from __future__ import annotations

from typing import Any, TextIO

from ..errors import SocketkitError, UnsupportedError
from ._client import BenchConfig, IntervalSample

__all__ = ["IntervalPrinter", "format_bytes", "format_rate", "plot", "summary_table"]

#: Plot size in pixels (width, height): 10 x 7 inches at 100 dpi.
PLOT_SIZE = (1000, 700)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(bits_per_second: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("Kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.2f} {unit}"
    return f"{bits_per_second:.0f} bit/s"


class IntervalPrinter:
    """Prints one line per interval; on a terminal, one live line that rewrites itself."""

    def __init__(self, stream: TextIO, config: BenchConfig, *, live: bool | None = None) -> None:
        self.stream = stream
        self.config = config
        if live is None:
            isatty = getattr(stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live

    def __call__(self, s: IntervalSample) -> None:
        span = max(s.end - s.start, 1e-9)
        when = f"[{s.start:6.2f}-{s.end:6.2f} s]"
        if self.config.mode == "latency":
            text = f"{when} {sum(s.requests) / span:12.0f} requests/s"
        else:
            nbytes = sum(s.bytes)
            text = f"{when} {format_bytes(nbytes):>12} {format_rate(nbytes * 8 / span):>14}"
        if self.live:
            done = min(1.0, s.end / self.config.duration) if self.config.duration else 1.0
            bar = "#" * int(done * 20)
            self.stream.write(f"\r{text}  [{bar:<20}]")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def summary_table(doc: dict[str, Any]) -> str:
    """The end-of-run table, as text."""
    rows: list[tuple[str, ...]] = []
    if "latency" in doc:
        lat = doc["latency"]
        pct = lat["percentiles_us"]
        rows.append(("requests", "req/s", "p50", "p90", "p99", "p99.9", "max (us)"))
        rows.append(
            (
                str(lat["requests"]),
                f"{lat['requests_per_second']:.0f}",
                *(f"{pct[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
            )
        )
    else:
        rows.append(("direction", "role", "transfer", "seconds", "bitrate"))
        for direction, sides in doc["summary"].items():
            for role in ("sender", "receiver"):
                fig = sides[role]
                rows.append(
                    (
                        "client -> server" if direction == "forward" else "server -> client",
                        role,
                        format_bytes(fig["bytes"]),
                        f"{fig['seconds']:.2f}",
                        format_rate(fig["bits_per_second"]),
                    )
                )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if "udp" in doc:
        u = doc["udp"]
        lines.append(
            f"UDP: {u['lost']}/{u['packets']} datagrams lost ({u['lost_percent']:.2f} %), "
            f"{u['out_of_order']} out of order, jitter {u['jitter_ms']:.3f} ms"
        )
    cpu = doc["client"]["cpu_percent"]
    note = (
        " (a client process is near one full core: it may be the limit; try --procs)"
        if cpu and max(cpu) > 90
        else ""
    )
    lines.append(
        f"client: {doc['client']['processes']} process(es), CPU "
        + ", ".join(f"{c:.0f} %" for c in cpu)
        + note
    )
    return "\n".join(lines)


def plot(doc: dict[str, Any], path: str) -> None:
    """Write a PNG: the rate over time (per stream and total), and the latency distribution.

    Raises:
        UnsupportedError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UnsupportedError("--plot needs matplotlib: pip install 'socketkit[plot]'") from None
    width, height = PLOT_SIZE
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width / 100, height / 100), dpi=100)
    intervals = doc["intervals"]
    ends = [i["end"] for i in intervals]
    latency = doc.get("latency")
    if latency is not None:
        top.plot(ends, [i["requests_per_second"] for i in intervals], marker="o", label="total")
        top.set_ylabel("requests/s")
        top.set_title(
            f"latency test: {latency['connections']} connection(s), depth {latency['depth']}"
        )
        values = [v for v, _ in latency["histogram_us"]]
        counts = [n for _, n in latency["histogram_us"]]
        total = sum(counts) or 1
        running = 0
        cdf = []
        for n in counts:
            running += n
            cdf.append(100.0 * running / total)
        bottom.plot(values, cdf, drawstyle="steps-post")
        for name, value in latency["percentiles_us"].items():
            if name.startswith("p"):
                bottom.axvline(value, linestyle=":", color="grey")
                bottom.annotate(name, (value, 5), rotation=90, fontsize=8)
        bottom.set_xscale("log")
        bottom.set_xlabel("latency (us, log scale)")
        bottom.set_ylabel("% of requests at or below")
        bottom.set_title("latency distribution (cumulative)")
    else:
        totals = [i["bits_per_second"] / 1e9 for i in intervals]
        top.plot(ends, totals, marker="o", label="total")
        top.set_ylabel("Gbit/s")
        top.set_title(f"{doc['params']['mode']} throughput over time")
        n_streams = len(intervals[0]["streams"]) if intervals else 0
        for k in range(n_streams):
            rates = [
                i["streams"][k] * 8 / max(i["end"] - i["start"], 1e-9) / 1e9 for i in intervals
            ]
            bottom.plot(ends, rates, marker=".", label=f"stream {k}")
        bottom.set_ylabel("Gbit/s")
        bottom.set_title("per stream (no latency distribution in a throughput test)")
        if n_streams <= 8:
            bottom.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_xlim(left=0)
    top.set_ylim(bottom=0)
    top.set_xlabel("seconds (each point: the interval ending there)")
    if latency is None:
        bottom.set_xlabel("seconds")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise SocketkitError(f"cannot write the plot to {path}: {exc.strerror}") from exc
    finally:
        plt.close(fig)
