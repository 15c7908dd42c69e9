"""Turns measurements into the table: medians per system, ratios, notes."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .common import PROCS, THROUGHPUT_CALLERS, Counts
from .harness import Measurement

US = "dubbo"
# Columns that get no ratio column: variants of dubbo itself (the notes compare them).
VARIANTS = ("dubbo-procs2",)


@dataclass(frozen=True)
class Row:
    scenario: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool = True


def rows_for(counts: Counts) -> list[Row]:
    from .messages import SMALL_SIZE

    c = counts
    lower = ", lower is better"
    idle = f"{c.idle_streams:,} idle open streams"
    callers = f"{THROUGHPUT_CALLERS} callers × {c.throughput_calls_per_caller:,} calls"
    rows: list[Row] = []

    def add(scenario: str, metric: str, label: str, unit: str, op: str,
            extra: Sequence[Row] = (), higher_is_better: bool = True,
            short: str | None = None) -> None:
        rows.append(Row(scenario, metric, label, unit, higher_is_better))
        rows.extend(extra)
        short = short or label.partition(":")[0]
        rows.append(Row(scenario, "server_cpu_us", f"{short}: server CPU per {op}",
                        "µs" + lower, False))
        rows.append(Row(scenario, "client_cpu_us", f"{short}: client CPU per {op}",
                        "µs" + lower, False))

    def latency(scenario: str, name: str) -> list[Row]:
        return [Row(scenario, "p50_us", f"{name} p50", "µs" + lower, False),
                Row(scenario, "p99_us", f"{name} p99", "µs" + lower, False)]

    def large(scenario: str, name: str) -> list[Row]:
        return [Row(scenario, "p50_ms", f"{name} p50", "ms" + lower, False),
                Row(scenario, "p99_ms", f"{name} p99", "ms" + lower, False)]

    mb = "MB/s (request + reply)"
    add("pb_unary_latency", "calls_per_s",
        f"pb unary: {c.unary_calls:,} sequential HelloRequest ({SMALL_SIZE} B) calls",
        "calls/s", "call", latency("pb_unary_latency", "pb unary latency"))
    add("pb_unary_throughput", "calls_per_s", f"pb 16 callers: {callers}, one connection",
        "calls/s", "call")
    add("pb_unary_connections", "calls_per_s",
        f"pb 16 connections: {callers}, a connection each", "calls/s", "call")
    add("pb_server_stream", "messages_per_s",
        f"pb server stream: {c.stream_messages:,} HelloReplies, one call", "messages/s",
        "message")
    add("pb_client_stream", "messages_per_s",
        f"pb client stream: {c.stream_messages:,} HelloRequests, one call", "messages/s",
        "message")
    add("pb_ping_pong", "round_trips_per_s",
        f"pb ping-pong: {c.ping_pongs:,} round trips, one stream", "round trips/s",
        "round trip")
    add("pb_large_unary", "mb_per_s", f"pb 4 MiB: {c.large_calls} echoes of a Blob "
        "(one 4 MiB bytes field)", mb, "echo", large("pb_large_unary", "pb 4 MiB echo"))
    add("unary_latency", "calls_per_s",
        f"raw unary: {c.unary_calls:,} sequential 100 B echoes", "calls/s", "call",
        latency("unary_latency", "raw unary latency"))
    add("unary_throughput", "calls_per_s", f"raw 16 callers: {callers}, one connection",
        "calls/s", "call")
    add("server_stream", "messages_per_s",
        f"raw server stream: {c.stream_messages:,} replies of 100 B, one call",
        "messages/s", "message")
    add("client_stream", "messages_per_s",
        f"raw client stream: {c.stream_messages:,} requests of 100 B, one call",
        "messages/s", "message")
    add("ping_pong", "round_trips_per_s",
        f"raw ping-pong: {c.ping_pongs:,} round trips, one stream", "round trips/s",
        "round trip")
    add("large_unary", "mb_per_s", f"raw 4 MiB: {c.large_calls} echoes of 4 MiB", mb,
        "echo", large("large_unary", "raw 4 MiB echo"))
    add("connect", "ms", f"new connection + first call (median of {c.connects})",
        "ms" + lower, "connection", higher_is_better=False, short="new connection")
    rows += [
        Row("idle_streams", "rss_mib", f"server RSS with {idle}", "MiB" + lower, False),
        Row("idle_streams", "kib_per_stream", "server RSS growth per idle stream",
            "KiB" + lower, False),
        Row("idle_streams", "threads", f"server threads with {idle}",
            "threads" + lower, False),
    ]
    return rows


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


def compared(systems: Sequence[str]) -> list[str]:
    """The systems that get a ratio column."""
    if US not in systems:
        return []
    return [s for s in systems if s != US and s not in VARIANTS]


def header(systems: Sequence[str]) -> list[str]:
    others = compared(systems)
    return ["scenario", "unit", *systems, *(f"{US}/{s}" for s in others)]


def table_lines(table: Sequence[TableRow], systems: Sequence[str]) -> list[list[str]]:
    others = compared(systems)
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
    loads = sorted(m.load_1m for m in measurements if m.load_1m)
    if loads:
        notes.append(f"1-minute load average as the measurements began: {loads[0]:.2f} to "
                     f"{loads[-1]:.2f}, median {statistics.median(loads):.2f} (the benchmark "
                     "itself adds about 1-2 while it runs).")
    if any(c.capped for r in table for c in r.cells.values()):
        notes.append(f"* capped: a run hit its {cap:g} s cap; the figure covers the "
                     "work it completed.")
    if any(c.failed_runs for r in table for c in r.cells.values()):
        notes.append("† some runs failed; the figure is the median of the others.")
    if any(r.cells.get("floor") and r.cells["floor"].value for r in table):
        notes.append("floor: a minimal h2 echo (tests/benchmark/floor.py: plain h2, one "
                     "blocking thread per side, gRPC framing, no framework), measured only "
                     "in the rows it can serve; '-' elsewhere. dubbo/floor < 1 is how far "
                     "dubbo is from what this stack can do at all.")
    if any(s.startswith("pb_") for s in {r.row.scenario for r in table}):
        notes.append("pb rows carry protobuf messages, each system on its own protobuf "
                     "path; raw rows carry bytes (the transport alone). CPU rows: CPU time "
                     "of the server process (and its children) and of the client process "
                     "during the timed section, per operation.")
    for r in table:
        variant, ours = r.cells.get("dubbo-procs2"), r.cells.get(US)
        if variant and variant.value and ours and ours.value and r.row.metric == "calls_per_s":
            notes.append(f"dubbo-procs2 (dubbo.Server(..., processes={PROCS})), "
                         f"{r.row.label}: {variant.value / ours.value:.2f}× one process.")
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
    others = compared(systems)
    return [{"scenario": r.row.scenario, "metric": r.row.metric, "label": r.row.label,
             "unit": r.row.unit, "higher_is_better": r.row.higher_is_better,
             "values": {s: r.cells[s].value for s in systems},
             "per_run": {s: r.cells[s].values for s in systems},
             "capped": {s: r.cells[s].capped for s in systems},
             "failed_runs": {s: r.cells[s].failed_runs for s in systems},
             "ratios": {f"{US}/{s}": r.ratio(s) for s in others}}
            for r in table]
