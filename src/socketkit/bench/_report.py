"""Reports of a bench run: iperf3's JSON document, its text, interval lines, the plot.

``build_document`` gives iperf3's ``-J`` shape (``start``, ``intervals``,
``end`` with ``sum_sent``/``sum_received``, ``bits_per_second``,
``retransmits``, UDP ``jitter_ms``/``lost_packets``) from this side's streams
and the peer's results, for either role, so the client's ``--json`` and the
server's report to ``--get-server-output`` are one code path. Sender and
receiver figures come from the side that measured them, as in iperf3.

Units of the text follow iperf3: bytes in binary prefixes and rates in
decimal bits per second, so the figures compare directly.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..errors import SocketkitError, UnsupportedError
from ._protocol import Results, StreamResult, TestParams
from ._streams import IntervalSample, Stream

__all__ = [
    "IntervalPrinter",
    "IntervalSample",
    "build_document",
    "format_bytes",
    "format_rate",
    "plot",
    "summary_table",
    "text_report",
]

#: Plot size in pixels (width, height): 10 x 7 inches at 100 dpi.
PLOT_SIZE = (1000, 700)
VERSION = "socketkit bench (iperf3 protocol)"


def format_bytes(n: float) -> str:
    """A byte count as iperf3 prints it: ``512 B``, ``1.50 MiB`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(bits_per_second: float) -> str:
    """A bit rate as iperf3 prints it: ``941.23 Mbit/s`` (decimal units)."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("Kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.2f} {unit}"
    return f"{bits_per_second:.0f} bit/s"


def _rate(nbytes: float, seconds: float) -> float:
    return nbytes * 8 / seconds if seconds > 0 else 0.0


def system_info() -> str:
    u = platform.uname()
    return f"{u.system} {u.node} {u.release} {u.version} {u.machine}"


def start_section(
    params: TestParams, cookie: bytes, streams: Sequence[Stream], extra: dict[str, Any]
) -> dict[str, Any]:
    now = time.time()
    return {
        "connected": [
            {
                "socket": s.fd,
                "local_host": s.local[0],
                "local_port": s.local[1],
                "remote_host": s.remote[0],
                "remote_port": s.remote[1],
            }
            for s in streams
        ],
        "version": VERSION,
        "system_info": system_info(),
        "timestamp": {
            "time": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            "timesecs": int(now),
        },
        **extra,
        "cookie": cookie.rstrip(b"\0").decode("ascii", "replace"),
        "target_bitrate": params.bandwidth,
        "test_start": {
            "protocol": params.protocol.upper(),
            "num_streams": params.parallel,
            "blksize": params.length,
            "omit": params.omit,
            "duration": params.time,
            "bytes": params.num,
            "blocks": params.blockcount,
            "reverse": int(params.reverse),
            "bidir": int(params.bidirectional),
            "tos": 0,
            "target_bitrate": params.bandwidth,
        },
    }


def _span(nbytes: int, seconds: float, sender: bool, **extra: Any) -> dict[str, Any]:
    return {
        "start": 0,
        "end": seconds,
        "seconds": seconds,
        "bytes": nbytes,
        "bits_per_second": _rate(nbytes, seconds),
        **extra,
        "sender": sender,
    }


def _peer_seconds(peer: StreamResult | None) -> float:
    return max(0.0, peer.end_time - peer.start_time) if peer is not None else 0.0


def build_document(
    *,
    role: str,
    params: TestParams,
    streams: Sequence[Stream],
    peer: Results | None,
    intervals: Sequence[IntervalSample],
    start: dict[str, Any],
    cpu: tuple[float, float, float],
    retransmits: dict[int, int],
    omitted_bytes: dict[int, int] | None = None,
) -> dict[str, Any]:
    """iperf3's JSON document for this side of a finished test.

    Args:
        role: ``client`` or ``server``: decides which streams are "sent"
            (the client's direction; with --bidir the other one is
            ``*_bidir_reverse``).
        streams: this side's streams (``sending`` from this side's view).
        peer: the far side's results (None if the test ended without them).
        retransmits: per sending stream id, what the kernel reported.
        omitted_bytes: per stream id, bytes moved in the -O seconds (left out).
    """
    by_id = {s.id: s for s in (peer.streams if peer else ())}
    omitted = omitted_bytes or {}
    udp = params.protocol == "udp"
    end_streams: list[dict[str, Any]] = []
    groups: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for s in streams:
        far = by_id.get(s.id)
        mine = s.bytes - omitted.get(s.id, 0)
        client_sends = s.sending if role == "client" else not s.sending
        if s.sending:
            sent, sent_s = mine, s.seconds
            recv, recv_s = (far.bytes if far else 0), _peer_seconds(far) or s.seconds
            retr = retransmits.get(s.id)
        else:
            sent, sent_s = (far.bytes if far else 0), _peer_seconds(far) or s.seconds
            recv, recv_s = mine, s.seconds
            retr = far.retransmits if far and far.retransmits >= 0 else None
        fig: dict[str, Any] = {"sent": sent, "sent_s": sent_s, "recv": recv, "recv_s": recv_s}
        fig["retr"] = retr
        if udp:
            if s.sending:
                sent_packets = s.packets
                received = (far.packets - far.errors) if far else 0
                jitter_ms = far.jitter * 1000 if far else 0.0
                ooo = 0
            else:
                stats = s.udp
                sent_packets = far.packets if far else (stats.highest if stats else 0)
                received = stats.packets if stats else 0
                jitter_ms = stats.jitter_ns / 1e6 if stats else 0.0
                ooo = stats.out_of_order if stats else 0
            lost = max(0, sent_packets - received)
            fig |= {"packets": sent_packets, "lost": lost, "jitter": jitter_ms, "ooo": ooo}
            entry: dict[str, Any] = {
                "udp": {
                    "socket": s.fd,
                    **_span(sent, sent_s, s.sending),
                    "jitter_ms": jitter_ms,
                    "lost_packets": lost,
                    "packets": sent_packets,
                    "lost_percent": 100.0 * lost / sent_packets if sent_packets else 0.0,
                    "out_of_order": ooo,
                }
            }
        else:
            extra = {"retransmits": retr} if retr is not None else {}
            entry = {
                "sender": {"socket": s.fd, **_span(sent, sent_s, s.sending, **extra)},
                "receiver": {"socket": s.fd, **_span(recv, recv_s, s.sending)},
            }
        entry["id"] = s.id
        end_streams.append(entry)
        main = client_sends if params.bidirectional else True
        groups[main].append(fig | {"sender": s.sending})
    end: dict[str, Any] = {"streams": end_streams}
    for main, suffix in ((True, ""), (False, "_bidir_reverse")):
        figs = groups[main]
        if not figs:
            continue
        sender = figs[0]["sender"]
        sent = sum(f["sent"] for f in figs)
        recv = sum(f["recv"] for f in figs)
        sent_s = max(f["sent_s"] for f in figs)
        recv_s = max(f["recv_s"] for f in figs)
        retrs = [f["retr"] for f in figs if f["retr"] is not None]
        extra = {"retransmits": sum(retrs)} if retrs and not udp else {}
        if udp:
            packets = sum(f["packets"] for f in figs)
            lost = sum(f["lost"] for f in figs)
            jitter = sum(f["jitter"] for f in figs) / len(figs)
            udp_fig = {
                "jitter_ms": jitter,
                "lost_packets": lost,
                "packets": packets,
                "lost_percent": 100.0 * lost / packets if packets else 0.0,
            }
            end["sum" + suffix] = _span(recv, recv_s, sender, **udp_fig)
            end["sum_sent" + suffix] = _span(sent, sent_s, sender, **udp_fig | {"jitter_ms": 0})
            end["sum_received" + suffix] = _span(recv, recv_s, False, **udp_fig)
        else:
            end["sum_sent" + suffix] = _span(sent, sent_s, sender, **extra)
            end["sum_received" + suffix] = _span(recv, recv_s, sender)
    remote = (peer.cpu_util_total, peer.cpu_util_user, peer.cpu_util_system) if peer else (0, 0, 0)
    end["cpu_utilization_percent"] = {
        "host_total": cpu[0],
        "host_user": cpu[1],
        "host_system": cpu[2],
        "remote_total": remote[0],
        "remote_user": remote[1],
        "remote_system": remote[2],
    }
    return {
        "start": start,
        "intervals": [_interval(i, streams, role, params.bidirectional) for i in intervals],
        "end": end,
    }


def _interval(
    sample: IntervalSample, streams: Sequence[Stream], role: str, bidir: bool
) -> dict[str, Any]:
    seconds = sample.end - sample.start
    entries = []
    sums: dict[bool, list[int]] = {True: [], False: []}
    for s, n in zip(streams, sample.bytes, strict=True):
        entries.append(
            {
                "socket": s.fd,
                "start": sample.start,
                "end": sample.end,
                "seconds": seconds,
                "bytes": n,
                "bits_per_second": _rate(n, seconds),
                "omitted": sample.omitted,
                "sender": s.sending,
            }
        )
        client_sends = s.sending if role == "client" else not s.sending
        sums[client_sends if bidir else True].append(n)
    out: dict[str, Any] = {"streams": entries}
    for main, key in ((True, "sum"), (False, "sum_bidir_reverse")):
        if sums[main]:
            total = sum(sums[main])
            out[key] = {
                "start": sample.start,
                "end": sample.end,
                "seconds": seconds,
                "bytes": total,
                "bits_per_second": _rate(total, seconds),
                "omitted": sample.omitted,
            }
    return out


# -- text ----------------------------------------------------------------------------
def _line(sid: str, start: float, end: float, nbytes: float, tail: str = "") -> str:
    rate = format_rate(_rate(nbytes, end - start))
    return f"[{sid:>3}] {start:6.2f}-{end:6.2f} sec  {format_bytes(nbytes):>11}  {rate:>14}{tail}"


HEADER = "[ ID] Interval           Transfer       Bitrate"


def text_report(doc: dict[str, Any]) -> str:
    """iperf3's text for a finished test: the intervals, then sender and receiver lines."""
    lines = [HEADER]
    for interval in doc["intervals"]:
        for s in interval["streams"]:
            lines.append(_line(str(s["socket"]), s["start"], s["end"], s["bytes"]))
        if len(interval["streams"]) > 1:
            for key in ("sum", "sum_bidir_reverse"):
                if key in interval:
                    t = interval[key]
                    lines.append(_line("SUM", t["start"], t["end"], t["bytes"]))
    lines.append("- " * 25)
    lines.append(summary_table(doc))
    return "\n".join(lines)


def summary_table(doc: dict[str, Any]) -> str:
    """The end-of-test lines: per direction, sender and receiver (and UDP loss)."""
    end = doc["end"]
    if "latency" in end:
        lat = end["latency"]
        pct = lat["percentiles_us"]
        rows: list[tuple[str, ...]] = [
            ("requests", "req/s", "p50", "p90", "p99", "p99.9", "max (us)")
        ]
        rows.append(
            (
                str(lat["requests"]),
                f"{lat['requests_per_second']:.0f}",
                *(f"{pct[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
            )
        )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows
        )
    lines = []
    for suffix, label in (("", ""), ("_bidir_reverse", " (reverse)")):
        sent = end.get("sum_sent" + suffix)
        recv = end.get("sum_received" + suffix)
        if sent is None or recv is None:
            continue
        retr = f"  {sent['retransmits']} retransmits" if "retransmits" in sent else ""
        lines.append(_line("SUM", 0, sent["seconds"], sent["bytes"], f"  sender{label}{retr}"))
        lines.append(_line("SUM", 0, recv["seconds"], recv["bytes"], f"  receiver{label}"))
        if "lost_packets" in recv:
            lines.append(
                f"UDP{label}: {recv['lost_packets']}/{recv['packets']} datagrams lost "
                f"({recv['lost_percent']:.2f} %), jitter {recv['jitter_ms']:.3f} ms"
            )
    return "\n".join(lines)


class IntervalPrinter:
    """Prints one line per interval; on a terminal, one live line that rewrites itself."""

    def __init__(
        self, stream: TextIO, *, latency: bool, duration: float, live: bool | None = None
    ) -> None:
        self.stream = stream
        self.latency = latency
        self.duration = duration
        if live is None:
            isatty = getattr(stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live

    def __call__(self, s: IntervalSample) -> None:
        span = max(s.end - s.start, 1e-9)
        if self.latency:
            text = (
                f"[SUM] {s.start:6.2f}-{s.end:6.2f} sec  {sum(s.requests) / span:12.0f} requests/s"
            )
        else:
            text = _line("SUM", s.start, s.end, sum(s.bytes), "  (omitted)" if s.omitted else "")
        if self.live:
            done = min(1.0, s.end / self.duration) if self.duration else 1.0
            bar = "#" * int(done * 20)
            self.stream.write(f"\r{text}  [{bar:<20}]")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


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
        raise UnsupportedError("plotting needs matplotlib: pip install 'socketkit[plot]'") from None
    width, height = PLOT_SIZE
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(width / 100, height / 100), dpi=100)
    intervals = doc["intervals"]
    ends = [i["sum"]["end"] for i in intervals]
    latency = doc["end"].get("latency")
    if latency is not None:
        top.plot(ends, [i["sum"]["requests_per_second"] for i in intervals], marker="o")
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
        top.plot(ends, [i["sum"]["bits_per_second"] / 1e9 for i in intervals], marker="o")
        top.set_ylabel("Gbit/s")
        top.set_title(f"{doc['start']['test_start']['protocol']} throughput over time")
        n_streams = len(intervals[0]["streams"]) if intervals else 0
        for k in range(n_streams):
            rates = [i["streams"][k]["bits_per_second"] / 1e9 for i in intervals]
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
