"""Turns measurements into the table: medians per system, ratios, notes."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import THROUGHPUT_CALLERS, Counts
from .harness import Measurement

US = "dubbo"


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool = True


def rows_for(counts: Counts) -> list[Row]:
    c = counts
    lower = ", lower is better"
    idle = f"{c.idle_streams:,} idle open streams"
    return [
        Row("unary_latency", "calls_per_s",
            f"unary latency: {c.unary_calls:,} sequential 100 B echoes", "calls/s"),
        Row("unary_latency", "p50_us", "unary latency p50", "µs" + lower, False),
        Row("unary_latency", "p99_us", "unary latency p99", "µs" + lower, False),
        Row("unary_throughput", "calls_per_s",
            f"unary throughput: {THROUGHPUT_CALLERS} callers × "
            f"{c.throughput_calls_per_caller:,} echoes, one client", "calls/s"),
        Row("server_stream", "messages_per_s",
            f"server stream: {c.stream_messages:,} replies of 100 B, one call", "messages/s"),
        Row("client_stream", "messages_per_s",
            f"client stream: {c.stream_messages:,} requests of 100 B, one call", "messages/s"),
        Row("ping_pong", "round_trips_per_s",
            f"bidi ping-pong: {c.ping_pongs:,} round trips, one stream", "round trips/s"),
        Row("large_unary", "mb_per_s",
            f"large unary: {c.large_calls} echoes of 4 MiB", "MB/s (request + reply)"),
        Row("large_unary", "p50_ms", "large unary p50", "ms" + lower, False),
        Row("large_unary", "p99_ms", "large unary p99", "ms" + lower, False),
        Row("connect", "ms", f"new connection + first call (median of {c.connects})",
            "ms" + lower, False),
        Row("idle_streams", "rss_mib", f"server RSS with {idle}", "MiB" + lower, False),
        Row("idle_streams", "kib_per_stream", "server RSS growth per idle stream",
            "KiB" + lower, False),
        Row("idle_streams", "threads", f"server threads with {idle}",
            "threads" + lower, False),
    ]


@dataclass
class Cell:
    value: float | None = None  # the median of ``values``
    capped: bool = False
    failed_runs: int = 0
    values: list[float] = field(default_factory=list)  # per run, in run order


@dataclass
class TableRow:
    row: Row
    cells: dict[str, Cell] = field(default_factory=dict)

    def ratio(self, other: str) -> float | None:
        """> 1 means dubbo is better, whichever way the unit points."""
        ours, theirs = self.cells.get(US), self.cells.get(other)
        if ours is None or theirs is None or not ours.value or not theirs.value:
            return None
        if self.row.higher_is_better:
            return ours.value / theirs.value
        return theirs.value / ours.value


def aggregate(measurements: Iterable[Measurement], rows: Sequence[Row],
              systems: Sequence[str]) -> list[TableRow]:
    by_key: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        by_key.setdefault((m.scenario, m.system), []).append(m)
    table = []
    for row in rows:
        if not any((row.scenario, s) in by_key for s in systems):
            continue
        table_row = TableRow(row)
        for system in systems:
            runs = by_key.get((row.scenario, system), [])
            values = [m.metrics[row.metric] for m in runs
                      if m.error is None and row.metric in m.metrics]
            table_row.cells[system] = Cell(
                statistics.median(values) if values else None,
                capped=any(m.capped for m in runs),
                failed_runs=sum(m.error is not None for m in runs), values=values)
        table.append(table_row)
    return table


def format_number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_cell(cell: Cell) -> str:
    if cell.value is None:
        return "error" if cell.failed_runs else "-"
    text = format_number(cell.value)
    if cell.capped:
        text += "*"
    if cell.failed_runs:
        text += "†"
    return text


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def header(systems: Sequence[str]) -> list[str]:
    others = [s for s in systems if s != US]
    return ["scenario", "unit", *systems, *(f"{US}/{s}" for s in others if US in systems)]


def table_lines(table: Sequence[TableRow], systems: Sequence[str]) -> list[list[str]]:
    others = [s for s in systems if s != US] if US in systems else []
    lines = []
    for table_row in table:
        ratios = [table_row.ratio(s) for s in others]
        lines.append([table_row.row.label, table_row.row.unit,
                      *(format_cell(table_row.cells[s]) for s in systems),
                      *(format_ratio(r) for r in ratios)])
    return lines


def render(table: Sequence[TableRow], systems: Sequence[str], markdown: bool) -> str:
    head = header(systems)
    body = table_lines(table, systems)
    if markdown:
        numeric = len(head) - 2
        out = ["| " + " | ".join(head) + " |",
               "| --- | --- |" + " ---: |" * numeric]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(out)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: list[str]) -> str:
        return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(line, widths, strict=True)))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)])


def footer(table: Sequence[TableRow], measurements: Sequence[Measurement], runs: int,
           cap: float) -> list[str]:
    notes = [f"Medians of {runs} interleaved run(s). Ratio columns: > 1 means dubbo is "
             "better (higher-is-better rows: dubbo/other; lower-is-better rows: other/dubbo)."]
    if any(c.capped for r in table for c in r.cells.values()):
        notes.append(f"* capped: a run hit its {cap:g} s cap; the figure covers the "
                     "work it completed.")
    if any(c.failed_runs for r in table for c in r.cells.values()):
        notes.append("† some runs failed; the figure is the median of the others.")
    seen: set[str] = set()
    for m in measurements:
        for note in m.notes:
            text = f"{m.system} {m.scenario}: {note}"
            if text not in seen:
                seen.add(text)
                notes.append(text + _note_reason(m.system, m.scenario))
        if m.error is not None:
            notes.append(f"error: {m.system} {m.scenario} run {m.run}: {m.error}")
    return notes


def _note_reason(system: str, scenario: str) -> str:
    if system == "grpclib" and scenario == "idle_streams":
        return (" (grpclib's server keeps h2's default SETTINGS_MAX_CONCURRENT_STREAMS of "
                "100 per connection)")
    return ""


def as_json(table: Sequence[TableRow], systems: Sequence[str]) -> list[dict[str, Any]]:
    others = [s for s in systems if s != US] if US in systems else []
    return [{"scenario": r.row.scenario, "metric": r.row.metric, "label": r.row.label,
             "unit": r.row.unit, "higher_is_better": r.row.higher_is_better,
             "values": {s: r.cells[s].value for s in systems},
             "per_run": {s: r.cells[s].values for s in systems},
             "capped": {s: r.cells[s].capped for s in systems},
             "failed_runs": {s: r.cells[s].failed_runs for s in systems},
             "ratios": {f"{US}/{s}": r.ratio(s) for s in others}}
            for r in table]
