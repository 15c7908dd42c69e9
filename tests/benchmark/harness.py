"""Runs measurements: a server process and a client process per measurement.

Every process started here is ended by its PID in a ``finally`` block: stdin closed and
SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from .clients import WATCHDOG_GRACE
from .common import is_protobuf

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
CLIENT_EXTRA_TIMEOUT = WATCHDOG_GRACE + 25.0  # past the cap, before the client is killed


@dataclass
class Measurement:
    run: int
    system: str
    scenario: str
    metrics: dict[str, float] = field(default_factory=dict)
    capped: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    load_1m: float = 0.0  # the machine's 1-minute load average as the measurement began


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"tests.benchmark.{module}", *args]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End ``proc`` by its PID: close stdin and terminate, kill after a timeout."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    """The first line of ``stream``, or b"" if none came within ``timeout``."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return b""
    return stream.readline()


def tail(log: IO[bytes], limit: int = 600) -> str:
    log.seek(0)
    text = log.read().decode("utf-8", "replace").strip()
    return text[-limit:]


@contextmanager
def server_process(system: str, profile: str, messages: str, max_seconds: float,
                   log: IO[bytes]) -> Iterator[tuple[int, int]]:
    """A running server of ``system``: yields (pid, port)."""
    proc = subprocess.Popen(
        python_module("servers", system, "--profile", profile, "--messages", messages,
                      "--max-seconds", str(int(max_seconds))),
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    try:
        assert proc.stdout is not None
        line = read_line(proc.stdout, SERVER_START_TIMEOUT)
        if not line.strip().isdigit():
            raise RuntimeError(f"{system} server did not report a port "
                               f"(got {line!r}): {tail(log)}")
        yield proc.pid, int(line)
    finally:
        stop_process(proc)


def run_client(system: str, scenario: str, port: int, server_pid: int, divisor: int,
               cap: float, log: IO[bytes]) -> dict[str, Any]:
    """Run one client process; its JSON line, or {"error": ...}."""
    proc = subprocess.Popen(
        python_module("clients", system, scenario, str(port), "--divisor", str(divisor),
                      "--cap", str(cap), "--server-pid", str(server_pid)),
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    try:
        out, _ = proc.communicate(timeout=cap + CLIENT_EXTRA_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"client still running {cap + CLIENT_EXTRA_TIMEOUT:.0f} s after "
                         "its start; killed", "capped": True}
    finally:
        stop_process(proc)
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"client exited {proc.returncode} without a result: {tail(log)}"}
    return result


def measure(system: str, scenario: str, run: int, divisor: int, cap: float) -> Measurement:
    """One measurement: a fresh server process and a client process for it."""
    profile = "idle" if scenario == "idle_streams" else "default"
    messages = "protobuf" if is_protobuf(scenario) else "raw"
    started = time.perf_counter()
    measurement = Measurement(run, system, scenario)
    try:
        measurement.load_1m = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    with tempfile.TemporaryFile() as server_log, tempfile.TemporaryFile() as client_log:
        try:
            with server_process(system, profile, messages, cap + 3 * CLIENT_EXTRA_TIMEOUT,
                                server_log) as (pid, port):
                result = run_client(system, scenario, port, pid, divisor, cap, client_log)
        except RuntimeError as exc:
            result = {"error": str(exc)}
        if "error" in result:
            measurement.error = str(result["error"])
            server_tail = tail(server_log)
            if server_tail:
                measurement.error += f" [server stderr: {server_tail}]"
    measurement.metrics = dict(result.get("metrics") or {})
    measurement.capped = bool(result.get("capped"))
    measurement.notes = list(result.get("notes") or [])
    measurement.wall_s = time.perf_counter() - started
    return measurement
