"""The results table: rich when it is importable, plain text otherwise."""

from __future__ import annotations

from typing import Any

# fmt: off
COLUMNS = ["scenario", "server", "median", "unit", "vs C", "vs uvloop", "p50/p99 us",
           "cpu% srv/lg", "runs", "note"]
# fmt: on
RIGHT = {2, 4, 5, 6, 7, 8}


def _num(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:,.2f}"


def _ratio(entry: dict[str, Any], key: str) -> str:
    r = entry.get(key)
    return f"{r:.2f}x" if r is not None else "-"


def _cpu(cpu: dict[str, float | None] | None) -> str:
    if not cpu or cpu.get("server_core") is None or cpu.get("loadgen_core") is None:
        return ""
    return f"{cpu['server_core']:.0f}/{cpu['loadgen_core']:.0f}"


def rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for sc in report["scenarios"]:
        for name, e in sc["results"].items():
            status = e.get("status")
            if status == "ok":
                lat = e.get("latency_us")
                cpu = e.get("cpu_busy_pct")
                out.append(
                    [
                        sc["name"],
                        name,
                        _num(e["median"]),
                        sc["unit"],
                        _ratio(e, "vs_c"),
                        _ratio(e, "vs_uvloop"),
                        f"{lat['p50']:.0f}/{lat['p99']:.0f}" if lat else "",
                        _cpu(cpu),
                        str(len(e["runs"])),
                        "; ".join(x for x in (e.get("reason"), e.get("noisy")) if x),
                    ]
                )
            else:
                label = {"n/a": "n/a", "unavailable": "unavailable", "failed": "FAILED"}.get(
                    status or "", status or "?"
                )
                blank = [""] * 5  # unit, ratios, latency, cpu
                out.append([sc["name"], name, label, *blank, "0", e.get("reason", "")])
    return out


def print_report(report: dict[str, Any]) -> None:
    table_rows = rows(report)
    s = report["settings"]
    title = (
        f"socketkit benchmarks: medians of {s['runs']} run(s), {s['duration']:g} s each; "
        f"ratios = median / reference median (for KiB/conn lower is better)"
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(r[i]) for r in [COLUMNS, *table_rows]) for i in range(len(COLUMNS))]
        right = RIGHT

        def line(r: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()

        print(line(COLUMNS))
        print(line(["-" * w for w in widths]))
        prev = None
        for r in table_rows:
            if prev is not None and r[0] != prev:
                print()
            prev = r[0]
            print(line(r))
        return
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(COLUMNS):
        table.add_column(c, justify="right" if i in RIGHT else "left", overflow="fold")
    prev = None
    for r in table_rows:
        if prev is not None and r[0] != prev:
            table.add_section()
        prev = r[0]
        table.add_row(*r)
    Console(width=max(160, Console().width)).print(table)
