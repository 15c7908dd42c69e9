"""``python -m tests.benchmark``: dubbo against grpcio and grpclib, one table.

For run in 1..N, for scenario, for system: a fresh server process and a client process
of that system measure the scenario on 127.0.0.1. The table shows the medians of the
runs with ratio columns; see docs/performance.md. ``floor`` (a minimal h2 echo) runs
only the scenarios it can serve; ``dubbo-procs2`` (dubbo's server with processes=2) only
the 16-caller ones, and only when dubbo.Server accepts ``processes``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any

from .clients import SCENARIOS
from .common import SYSTEMS, Counts, supports
from .harness import REPO_ROOT, Measurement, measure
from .report import aggregate, as_json, footer, render, rows_for

QUICK_DIVISOR = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__)
    parser.add_argument("--runs", type=int, default=None,
                        help="interleaved runs, the table shows medians (default 3; 1 "
                             "with --quick)")
    parser.add_argument("--systems", type=_names(SYSTEMS), default=list(SYSTEMS),
                        help="comma-separated, from " + ",".join(SYSTEMS))
    parser.add_argument("--scenarios", type=_names(SCENARIOS), default=list(SCENARIOS),
                        help="comma-separated, from " + ",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: 1/{QUICK_DIVISOR} of the counts, one run")
    parser.add_argument("--cap", type=float, default=60.0,
                        help="wall-clock cap of each measurement, seconds (default 60)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (for docs/performance.md)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write environment, every measurement and the table")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if "dubbo-procs2" in args.systems and not _dubbo_accepts_processes():
        args.systems.remove("dubbo-procs2")  # this dubbo serves from one process only
        if not args.systems:
            parser.error("dubbo.Server does not accept processes=: no dubbo-procs2")
    return args


def _dubbo_accepts_processes() -> bool:
    """Asked in a subprocess, so the orchestrator imports no system's code."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from tests.benchmark.servers import "
             "dubbo_accepts_processes as f; print(f())"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.stdout.strip() == "True"


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(allowed)}")
        return [name for name in allowed if name in names]  # canonical order
    return parse


def environment() -> dict[str, Any]:
    versions = {"python": f"{platform.python_implementation()} {platform.python_version()}",
                "dubbo": _dubbo_version()}
    for dist in ("grpcio", "grpclib", "h2", "protobuf"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpu": _cpu_model(), "load_average_at_start": _load_average(),
            "versions": versions}


def _load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews the figures."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return []


def _dubbo_version() -> str:
    """The source tree's version (the processes import dubbo from the repository)."""
    version = "?"
    with open(os.path.join(REPO_ROOT, "setup.cfg"), encoding="utf-8") as setup:
        for line in setup:
            if line.startswith("version"):
                version = line.partition("=")[2].strip()
                break
    try:
        commit = _git("rev-parse", "--short", "HEAD").stdout.strip()
        # Read-only: exit status 1 when dubbo/ differs from the commit.
        if commit and _git("diff", "--quiet", "HEAD", "--", "dubbo").returncode == 1:
            commit += " + uncommitted changes in dubbo/"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version} (source tree at {commit})" if commit else version


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=10)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(env: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    load = "/".join(f"{x:.2f}" for x in env["load_average_at_start"]) or "?"
    if env.get("load_average_at_end"):
        load += " (1/5/15 min), at end " + "/".join(
            f"{x:.2f}" for x in env["load_average_at_end"])
    return (f"{env['date']}; {env['cpu_count']} CPUs ({env['cpu']}); {env['platform']}; "
            f"load average at start {load}\n{versions}")


def run_all(args: argparse.Namespace, divisor: int) -> list[Measurement]:
    measurements = []
    pairs = [(scenario, system) for scenario in args.scenarios for system in args.systems
             if supports(system, scenario)]
    total = args.runs * len(pairs)
    for run in range(1, args.runs + 1):
        for scenario, system in pairs:
            m = measure(system, scenario, run, divisor, args.cap)
            measurements.append(m)
            print(f"[{len(measurements)}/{total}] run {run} {scenario} {system}: "
                  f"{_summary(m)} ({m.wall_s:.1f} s)", file=sys.stderr, flush=True)
    return measurements


def _summary(m: Measurement) -> str:
    if m.error is not None:
        return f"ERROR {m.error}"
    shown = ", ".join(f"{k}={v:.4g}" for k, v in m.metrics.items())
    return shown + (" (capped)" if m.capped else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    divisor = QUICK_DIVISOR if args.quick else 1
    counts = Counts().scaled(divisor)
    env = environment()
    started = time.monotonic()
    measurements = run_all(args, divisor)
    table = aggregate(measurements, rows_for(counts), args.systems)
    notes = footer(table, measurements, args.runs, args.cap)
    env["load_average_at_end"] = _load_average()
    print(describe(env) + ("  \n" if args.markdown else "\n"))
    print(render(table, args.systems, args.markdown))
    print()
    print(("\n\n" if args.markdown else "\n").join(notes))
    elapsed = time.monotonic() - started
    print(f"\n({len(measurements)} measurements in {elapsed:.0f} s)", file=sys.stderr)
    if args.json:
        settings = {"runs": args.runs, "quick": args.quick, "divisor": divisor,
                    "cap_s": args.cap, "systems": args.systems, "scenarios": args.scenarios,
                    "counts": vars(counts), "elapsed_s": elapsed}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"environment": env, "settings": settings,
                       "table": as_json(table, args.systems), "notes": notes,
                       "measurements": [vars(m) for m in measurements]}, out, indent=2)
    return 1 if any(m.error is not None for m in measurements) else 0


if __name__ == "__main__":
    sys.exit(main())
