"""Smoke test of the benchmark harness: ``python -m pytest tests/benchmark``.

Not collected by a plain ``python -m pytest`` (setup.cfg's norecursedirs). It checks that
the harness works end to end for every system: a ``--quick`` run fills every cell of the
table a system measures with a positive number (the floor only some rows, dubbo-procs2
only the 16-caller rows and only when dubbo.Server accepts ``processes``), and the
protobuf rows carry protobuf. It never checks performance: figures depend on the
machine, and performance targets do not belong in timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from tests.benchmark.common import SCENARIOS, supports  # noqa: E402

SYSTEMS = ("dubbo", "grpcio", "grpclib", "floor")
RATIO_COLUMNS = ("dubbo/grpcio", "dubbo/grpclib", "dubbo/floor")
CPU_METRICS = {"server_cpu_us", "client_cpu_us"}


def run_benchmark(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.benchmark", *args], cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def dubbo_accepts_processes() -> bool:
    proc = subprocess.run([sys.executable, "-c", "from tests.benchmark.servers import "
                           "dubbo_accepts_processes as f; print(f())"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() == "True"


@pytest.mark.timeout(900)
def test_quick_run_fills_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_benchmark("--quick", "--json", str(out), timeout=840)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["runs"] == 1
    assert [m["error"] for m in data["measurements"] if m["error"]] == []
    systems = SYSTEMS + (("dubbo-procs2",) if dubbo_accepts_processes() else ())
    assert data["settings"]["systems"] == list(systems)
    measured = {(m["scenario"], m["system"]) for m in data["measurements"]}
    assert measured == {(sc, sy) for sc in SCENARIOS for sy in systems if supports(sy, sc)}
    assert len(data["measurements"]) == len(measured)
    assert {row["scenario"] for row in data["table"]} == set(SCENARIOS)
    for row in data["table"]:
        # The server's CPU time comes in 10 ms ticks: a quick run's fast streams may
        # cost it less than one, so its CPU cell may be 0 (and then has no ratio).
        cpu = row["metric"] in CPU_METRICS
        ticks = row["metric"] == "server_cpu_us"
        for system in systems:
            value = row["values"][system]
            if supports(system, row["scenario"]):
                assert isinstance(value, (int, float)), (row["label"], system)
                assert value >= 0 if ticks else value > 0, (row["label"], system, value)
            else:
                assert value is None, (row["label"], system)
        assert set(row["ratios"]) == {f"dubbo/{s}" for s in ("grpcio", "grpclib", "floor")}
        for column, ratio in row["ratios"].items():
            if supports(column.partition("/")[2], row["scenario"]) and not cpu:
                assert ratio is not None and ratio > 0, (row["label"], column)
        assert row["label"] in proc.stdout
    # every call scenario reports the CPU time of both sides
    for scenario in SCENARIOS:
        if scenario != "idle_streams":
            assert {r["metric"] for r in data["table"] if r["scenario"] == scenario} \
                >= CPU_METRICS, scenario
    head = next(line for line in proc.stdout.splitlines() if line.startswith("scenario"))
    assert head.split()[2:] == [*systems, *RATIO_COLUMNS]
    for name in ("python", "dubbo", "grpcio", "grpclib", "h2", "protobuf"):
        assert name in data["environment"]["versions"]
    assert data["environment"]["load_average_at_end"]


@pytest.mark.timeout(300)
def test_markdown_table_for_one_system() -> None:
    proc = run_benchmark("--quick", "--markdown", "--systems", "dubbo",
                         "--scenarios", "unary_latency", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| scenario | unit | dubbo |"
    assert len(table) == 2 + 5  # header, rule, calls/s + p50 + p99 + 2 CPU rows
    assert all(cell.strip() for line in table[2:] for cell in line.strip("|").split("|"))
