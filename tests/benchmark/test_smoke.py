"""Smoke test of the benchmark harness: ``python -m pytest tests/benchmark``.

Not collected by a plain ``python -m pytest`` (setup.cfg's norecursedirs). It checks that
the harness works end to end for all three systems: a ``--quick`` run fills every cell
of the table with a positive number. It never checks performance: figures depend on the
machine, and performance targets do not belong in timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("dubbo", "grpcio", "grpclib")
SCENARIOS = {"unary_latency", "unary_throughput", "server_stream", "client_stream",
             "ping_pong", "large_unary", "connect", "idle_streams"}


def run_benchmark(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.benchmark", *args], cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.timeout(900)
def test_quick_run_fills_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_benchmark("--quick", "--json", str(out), timeout=840)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["runs"] == 1
    assert [m["error"] for m in data["measurements"] if m["error"]] == []
    assert len(data["measurements"]) == len(SYSTEMS) * len(SCENARIOS)
    assert {row["scenario"] for row in data["table"]} == SCENARIOS
    for row in data["table"]:
        for system in SYSTEMS:
            value = row["values"][system]
            assert isinstance(value, (int, float)) and value > 0, (row["label"], system, value)
        assert all(ratio is not None and ratio > 0 for ratio in row["ratios"].values()), row
        assert row["label"] in proc.stdout
    for name in ("python", "dubbo", "grpcio", "grpclib", "h2", "protobuf"):
        assert name in data["environment"]["versions"]


@pytest.mark.timeout(300)
def test_markdown_table_for_one_system() -> None:
    proc = run_benchmark("--quick", "--markdown", "--systems", "dubbo",
                         "--scenarios", "unary_latency", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0] == "| scenario | unit | dubbo |"
    assert len(table) == 2 + 3  # header, rule, calls/s + p50 + p99
    assert all(cell.strip() for line in table[2:] for cell in line.strip("|").split("|"))
