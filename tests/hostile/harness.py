"""Tools for attacking a dubbo server the way a hostile peer would, and for measuring
what it costs the server.

* :class:`ServerProcess` runs ``serve.py`` in a subprocess (options as JSON on argv),
  so its memory (``VmRSS``) and thread count (``Threads``) can be read from
  ``/proc/<pid>/status`` without the test process counted in.
* :class:`Probe` is a normal caller on another connection: a fresh grpcio channel
  making one unary call every 0.25 s with a 1 s deadline, recording what it got.
* :class:`Monitor` samples the server's RSS and threads during an attack and flags a
  run whose memory goes past the limit, so the attack can stop early.
* :func:`check_attack` runs an attack twice with a probe and a monitor and asserts
  the issue's criteria: probe answered (at most one miss in ten), RSS within +200 MiB
  of the baseline, back within +64 MiB 10 s after the attacker left, and the second
  run adding no threads.
* The raw HTTP/2 toolkit: frames built by hand (any length, any header list, any
  window), HPACK blocks that need no connection state, and :class:`RawConnection`,
  a socket that sends whatever it is told and parses what the server answers.

Run as a script (``python harness.py open-streams PORT COUNT``) it is a client that
opens streams and then waits to be killed (the SIGKILLed-client test).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.errors
import h2.settings
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
SERVE_PY = os.path.join(HERE, "serve.py")

KiB = 1024
MiB = 1024 * 1024
SERVICE = "hostile.Test"

# The "done when" figures.
RSS_PEAK_LIMIT = 200 * MiB  # during an attack, over the baseline
RSS_RETURN_LIMIT = 64 * MiB  # over the baseline, within RSS_RETURN_WITHIN after it
RSS_RETURN_WITHIN = 10.0
PROBE_INTERVAL = 0.25
PROBE_DEADLINE = 1.0
PROBE_MIN_CALLS = 10  # "at most one miss in ten" needs ten calls to mean anything

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
DEFAULT_FRAME_SIZE = 16384  # what a peer may send before it has read our SETTINGS
DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1

ErrorCodes = h2.errors.ErrorCodes
SettingCodes = h2.settings.SettingCodes

_CLOSED_ERRNOS = (errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN)


# ---------------------------------------------------------------------- /proc readers


def proc_status(pid: int) -> dict[str, int]:
    """``rss`` (bytes) and ``threads`` of a live process, from /proc/<pid>/status."""
    rss = threads = -1
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    if rss < 0 or threads < 0:
        raise RuntimeError(f"no VmRSS/Threads in /proc/{pid}/status (process gone?)")
    return {"rss": rss, "threads": threads}


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


# ---------------------------------------------------------------------- the server


class ServerProcess:
    """``serve.py`` in a subprocess with ``options`` passed to ``dubbo.Server``.

    Killed (by its PID, SIGKILL) by ``stop()``; the conftest fixture always calls it.
    """

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self._log = tempfile.NamedTemporaryFile(prefix="hostile-server-", suffix=".log",
                                                delete=False)
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, SERVE_PY, json.dumps(self.options)],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        self.port = self._read_port(timeout=20.0)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
            elif self.proc.poll() is not None:
                break
        if not line.startswith(b"PORT "):
            self.stop()
            raise RuntimeError(f"serve.py did not start with options {self.options}: "
                               f"stdout {line!r}\n{self.log_text()}")
        return int(line.split()[1])

    def status(self) -> dict[str, int]:
        if self.proc.poll() is not None:
            raise AssertionError(f"the server process died (exit {self.proc.returncode})\n"
                                 f"{self.log_tail()}")
        return proc_status(self.pid)

    def rss(self) -> int:
        return self.status()["rss"]

    def threads(self) -> int:
        return self.status()["threads"]

    def call(self, method: str, request: bytes = b"", timeout: float = 5.0) -> bytes:
        """One unary call from a fresh grpcio channel (raises grpc.RpcError)."""
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            fn = channel.unary_unary(f"/{SERVICE}/{method}")
            return fn(request, timeout=timeout)

    def stats(self, timeout: float = 5.0) -> dict[str, Any]:
        """What serve.py says: handlers running, thread names."""
        return json.loads(self.call("Stats", timeout=timeout))

    def wait_rss_below(self, limit: int, timeout: float) -> tuple[bool, int, float]:
        """Poll until RSS <= ``limit``: (reached, last RSS, seconds waited)."""
        start = time.monotonic()
        for _ in range(int(timeout / 0.1) + 2):
            rss = self.rss()
            waited = time.monotonic() - start
            if rss <= limit:
                return True, rss, waited
            if waited >= timeout:
                break
            time.sleep(0.1)
        return False, rss, waited

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used, from /proc/<pid>/stat."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settled_threads(self, window: float = 0.5, timeout: float = 10.0) -> int:
        """The thread count once the server is quiet: over ``window`` seconds it used
        under 10 % of a core and its thread count did not change (or the last count
        seen after ``timeout``). A server still working through what an attacker sent
        before leaving, or a short-lived helper thread, is not counted as settled."""
        deadline = time.monotonic() + timeout
        now = self.threads()
        for _ in range(int(timeout / window) + 1):
            threads, cpu, start = now, self.cpu_seconds(), time.monotonic()
            time.sleep(window)
            now = self.threads()
            quiet = self.cpu_seconds() - cpu < 0.1 * (time.monotonic() - start)
            if (quiet and now == threads) or time.monotonic() >= deadline:
                break
        return now

    def log_text(self) -> str:
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_text().splitlines()[-lines:]
        return "server log (tail):\n" + "\n".join(text) if text else "server log: empty"

    def stop(self) -> None:
        """Kill the server (by PID) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def remove_log(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


# ---------------------------------------------------------------------- probe


@dataclass
class ProbeCall:
    started: float  # monotonic
    latency: float
    ok: bool
    error: str = ""


class Probe:
    """A normal caller on a connection of its own: one unary Echo every 0.25 s with a
    1 s deadline from a fresh grpcio channel. A miss is a failed or late call."""

    def __init__(self, port: int, interval: float = PROBE_INTERVAL,
                 deadline: float = PROBE_DEADLINE) -> None:
        self.port = port
        self.interval = interval
        self.deadline = deadline
        self.results: list[ProbeCall] = []
        self._lock = threading.Lock()  # guards results
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: Any = None

    def __enter__(self) -> Probe:
        import grpc

        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            grpc.channel_ready_future(self._channel).result(timeout=5)
            self._fn = self._channel.unary_unary(f"/{SERVICE}/Echo")
            self._fn(b"warm-up", timeout=5)  # the server must be healthy before the attack
        except Exception as exc:
            self._channel.close()
            raise AssertionError(f"the probe could not reach the server before the attack: "
                                 f"{exc!r}") from exc
        self._thread = threading.Thread(target=self._run, name="hostile-probe", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        import grpc

        start = time.monotonic()
        for tick in range(100_000):  # bounded; stopped long before by __exit__
            if self._stop.is_set():
                return
            t0 = time.monotonic()
            try:
                reply = self._fn(b"probe", timeout=self.deadline)
                latency = time.monotonic() - t0
                ok = reply == b"probe" and latency <= self.deadline
                error = "" if ok else f"late ({latency:.2f} s) or wrong reply"
            except grpc.RpcError as exc:
                latency = time.monotonic() - t0
                ok, error = False, f"{exc.code().name}: {exc.details()}"
            with self._lock:
                self.results.append(ProbeCall(t0, latency, ok, error))
            next_tick = start + (tick + 1) * self.interval
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.deadline + 5)
        self._channel.close()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.results)

    @property
    def misses(self) -> int:
        with self._lock:
            return sum(1 for r in self.results if not r.ok)

    def summary(self) -> str:
        with self._lock:
            results = list(self.results)
        if not results:
            return "probe: no calls"
        worst = max(r.latency for r in results)
        errors = sorted({r.error for r in results if not r.ok})
        return (f"probe: {len(results)} calls, {sum(not r.ok for r in results)} missed, "
                f"slowest {worst:.2f} s" + (f", errors {errors[:3]}" if errors else ""))


# ---------------------------------------------------------------------- monitor


class Monitor:
    """Samples the server's RSS and threads every 20 ms; ``exceeded`` once RSS passed
    ``abort_above`` (the attack should stop: the run has already failed)."""

    def __init__(self, server: ServerProcess, abort_above: int) -> None:
        self.server = server
        self.abort_above = abort_above
        self.peak_rss = 0
        self.peak_threads = 0
        self.exceeded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-monitor", daemon=True)

    def sample(self) -> None:
        try:
            status = proc_status(self.server.pid)
        except (OSError, RuntimeError):
            return
        self.peak_rss = max(self.peak_rss, status["rss"])
        self.peak_threads = max(self.peak_threads, status["threads"])
        if status["rss"] > self.abort_above:
            self.exceeded.set()

    def _run(self) -> None:
        for _ in range(50 * 3600):  # an hour at most; stopped by __exit__
            if self._stop.wait(0.02):
                return
            self.sample()

    def __enter__(self) -> Monitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


# ---------------------------------------------------------------------- attack runs


class AttackRun:
    """What an attack function is handed: ``going()`` says whether to keep attacking
    (until the probe has made its ten calls and ``min_seconds`` passed; never past
    ``max_seconds``; never once the server's memory went past the limit)."""

    def __init__(self, index: int, server: ServerProcess, probe: Probe, monitor: Monitor,
                 min_seconds: float, max_seconds: float) -> None:
        self.index = index
        self.server = server
        self.probe = probe
        self.monitor = monitor
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self.started = time.monotonic()
        self.notes: list[str] = []

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def aborted(self) -> bool:
        return self.monitor.exceeded.is_set()

    def out_of_time(self) -> bool:
        """Stop now: memory past the limit, or ``max_seconds`` used."""
        return self.aborted or self.elapsed >= self.max_seconds

    def going(self) -> bool:
        if self.out_of_time():
            return False
        return self.elapsed < self.min_seconds or self.probe.calls < PROBE_MIN_CALLS

    def hold(self) -> None:
        """Keep what the attack holds until the probe has had its say."""
        for _ in range(int(self.max_seconds / 0.05) + 1):
            if not self.going():
                return
            time.sleep(0.05)

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class RunReport:
    index: int
    seconds: float
    probe: str
    probe_calls: int
    probe_misses: int
    baseline_rss: int
    peak_rss: int
    peak_threads: int
    rss_after: int = -1
    returned_in: float = -1.0
    returned: bool = False
    threads_after: int = -1
    thread_kinds: dict[str, int] = field(default_factory=dict)
    aborted: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        after = "not measured" if self.rss_after < 0 else (
            f"{'+' if self.rss_after >= self.baseline_rss else ''}"
            f"{mib(self.rss_after - self.baseline_rss)} "
            f"{'after' if self.returned else 'still, after'} {self.returned_in:.1f} s")
        return (f"run {self.index + 1}: {self.seconds:.1f} s; {self.probe}; RSS baseline "
                f"{mib(self.baseline_rss)}, peak +{mib(self.peak_rss - self.baseline_rss)}"
                f"{' (attack stopped at the limit)' if self.aborted else ''}, back to {after}; "
                f"threads peak {self.peak_threads}, after {self.threads_after}"
                + (f" ({', '.join(f'{k} x{v}' for k, v in sorted(self.thread_kinds.items()))})"
                   if self.thread_kinds else "")
                + (f"; {'; '.join(self.notes)}" if self.notes else ""))


def check_attack(server: ServerProcess, attack: Callable[[AttackRun], None], *,
                 runs: int = 2, min_seconds: float = 2.6, max_seconds: float = 30.0,
                 peak_limit: int = RSS_PEAK_LIMIT, return_limit: int = RSS_RETURN_LIMIT,
                 return_within: float = RSS_RETURN_WITHIN,
                 worker_slack: int | None = 2) -> list[RunReport]:
    """Run ``attack`` ``runs`` times, each with a fresh probe and a monitor, and assert
    the issue's criteria. ``attack(run)`` attacks while ``run.going()`` (or holds what
    it opened with ``run.hold()``), asserts what its row says, and leaves (closes every
    socket) before it returns.

    "A second run adds no threads" compares the settled thread counts after the runs.
    A worker pool may start a thread when a call arrives just before the worker that
    ran the previous one is back to idle, so the second run may add up to
    ``worker_slack`` idle pool workers ("dubbo-worker*", named by the Stats call) and
    no other thread; ``None`` is for floods of calls that end at once, where how many
    workers the pool needed depends on scheduling (the pool bounds them)."""
    baseline = server.rss()
    reports: list[RunReport] = []
    for index in range(runs):
        with Probe(server.port) as probe, \
                Monitor(server, abort_above=baseline + peak_limit) as monitor:
            run = AttackRun(index, server, probe, monitor, min_seconds, max_seconds)
            attack(run)
            seconds = run.elapsed
            # An attack the server cut short (GOAWAY, closed connections) is over early:
            # the probe goes on until it has had its say, in the attack's aftermath.
            run.hold()
        report = RunReport(index, seconds, probe.summary(), probe.calls, probe.misses,
                           baseline, monitor.peak_rss, monitor.peak_threads,
                           aborted=run.aborted, notes=run.notes)
        reports.append(report)
        history = "\n".join(r.describe() for r in reports)
        if report.peak_rss - baseline > peak_limit:
            raise AssertionError(
                f"server RSS went {mib(report.peak_rss - baseline)} over its baseline "
                f"during the attack (limit +{mib(peak_limit)})\n{history}\n"
                f"{server.log_tail(10)}")
        if report.probe_calls < PROBE_MIN_CALLS or report.probe_misses * 10 > report.probe_calls:
            raise AssertionError(
                f"the probe on another connection was not served during the attack "
                f"(needs >= {PROBE_MIN_CALLS} calls, at most one miss in ten)\n{history}\n"
                f"{server.log_tail(10)}")
        ok, report.rss_after, report.returned_in = server.wait_rss_below(
            baseline + return_limit, return_within)
        report.returned = ok
        history = "\n".join(r.describe() for r in reports)
        if not ok:
            raise AssertionError(
                f"server RSS did not return within +{mib(return_limit)} of its baseline "
                f"{return_within:.0f} s after the attacker left\n{history}")
        report.threads_after = server.settled_threads()
        report.thread_kinds = _thread_kinds(server)
        print(report.describe())  # shown by pytest -rP or -s: the figures of each run
    if runs > 1:
        first, last = reports[0], reports[-1]
        history = "\n".join(r.describe() for r in reports)
        added = last.threads_after - first.threads_after
        workers = last.thread_kinds.get("dubbo-worker", 0) - \
            first.thread_kinds.get("dubbo-worker", 0)
        allowed = max(0, workers if worker_slack is None else min(workers, worker_slack))
        assert added <= allowed, (
            f"a second run of the same attack added threads ({first.threads_after} -> "
            f"{last.threads_after}; {max(0, workers)} idle pool workers among them, "
            f"{allowed} of which may be scheduling)\n{history}")
    return reports


def _thread_kinds(server: ServerProcess) -> dict[str, int]:
    """Thread names (digits and separators dropped) counted, from the Stats call."""
    try:
        names = server.stats(timeout=2.0)["threads"]
    except Exception as exc:  # no worker free to answer: shown in the report
        return {f"(Stats call failed: {exc.__class__.__name__})": 1}
    counts: dict[str, int] = {}
    for name in names:
        key = name.rstrip("0123456789_-")
        counts[key] = counts.get(key, 0) + 1
    return counts


# ---------------------------------------------------------------------- HPACK, frames


def _hpack_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def literal_block(headers: Iterable[tuple[str | bytes, str | bytes]]) -> bytes:
    """An HPACK block of "literal without indexing, new name" fields, no Huffman
    (RFC 7541 §6.2.2): it touches no dynamic table, so the same bytes are valid on any
    connection and any stream, and can be built once and sent thousands of times."""
    out = bytearray()
    for name, value in headers:
        n, v = _as_bytes(name), _as_bytes(value)
        out += b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v
    return bytes(out)


def open_literal(name: str | bytes, value_length: int) -> bytes:
    """The start of a literal field whose ``value_length``-byte value the caller sends
    on (in CONTINUATION frames): a header block that never ends."""
    n = _as_bytes(name)
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(value_length, 7)


def request_headers(method: str = "Echo", *, path: str | None = None,
                    timeout: str | None = None, content_type: str = "application/grpc",
                    encoding: str | None = None,
                    extra: Sequence[tuple[str | bytes, str | bytes]] = ()
                    ) -> list[tuple[str | bytes, str | bytes]]:
    """A gRPC request head for ``hostile.Test/<method>`` (or ``path``), any timeout
    string, content-type and extra fields: nothing is checked."""
    headers: list[tuple[str | bytes, str | bytes]] = [
        (":method", "POST"), (":scheme", "http"),
        (":path", path or f"/{SERVICE}/{method}"), (":authority", "127.0.0.1"),
        ("content-type", content_type), ("te", "trailers"),
    ]
    if timeout is not None:
        headers.append(("grpc-timeout", timeout))
    if encoding is not None:
        headers.append(("grpc-encoding", encoding))
    headers.extend(extra)
    return headers


def grpc_message(payload: bytes, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message."""
    return struct.pack("!BI", 1 if compressed else 0, len(payload)) + payload


def frame_header(ftype: int, flags: int, stream_id: int, length: int) -> bytes:
    """A raw 9-byte frame header declaring ``length`` whatever follows."""
    if not 0 <= length < 1 << 24:
        raise ValueError(f"a frame length has 24 bits: {length}")
    return struct.pack("!I", length)[1:] + struct.pack("!BBI", ftype, flags,
                                                        stream_id & 0x7FFFFFFF)


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return frame_header(ftype, flags, stream_id, len(payload)) + payload


def settings_frame(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    f = SettingsFrame(0, settings=dict(values or {}))
    if ack:
        f.flags.add("ACK")
    return f.serialize()


def header_frames(stream_id: int, block: bytes, end_stream: bool = False,
                  max_frame: int = DEFAULT_FRAME_SIZE) -> bytes:
    """HEADERS (+ CONTINUATION frames if the block is larger than ``max_frame``)."""
    first, rest = block[:max_frame], block[max_frame:]
    flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
    out = [frame(HEADERS, flags, stream_id, first)]
    while rest:
        chunk, rest = rest[:max_frame], rest[max_frame:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, stream_id, chunk))
    return b"".join(out)


def data_frame(stream_id: int, payload: bytes, end_stream: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)


def rst_stream_frame(stream_id: int, code: int = ErrorCodes.CANCEL) -> bytes:
    return RstStreamFrame(stream_id, error_code=code).serialize()


def ping_frame(opaque: bytes = b"hostile!", ack: bool = False) -> bytes:
    return PingFrame(0, opaque_data=opaque, flags=["ACK"] if ack else []).serialize()


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return WindowUpdateFrame(stream_id, window_increment=increment).serialize()


def preface(settings: dict[int, int] | None = None,
            connection_window: int | None = None) -> bytes:
    """The client preface, our SETTINGS, and optionally a connection WINDOW_UPDATE
    raising the server's send window to ``connection_window``."""
    data = PREFACE + settings_frame(settings)
    if connection_window is not None and connection_window > DEFAULT_WINDOW:
        data += window_update_frame(0, connection_window - DEFAULT_WINDOW)
    return data


def unary_request(stream_id: int, method: str = "Echo", payload: bytes = b"hello",
                  **head: Any) -> bytes:
    """HEADERS and one DATA frame with the message and END_STREAM: a whole unary call."""
    block = literal_block(request_headers(method, **head))
    return header_frames(stream_id, block) + data_frame(stream_id, grpc_message(payload), True)


# ---------------------------------------------------------------------- raw connection


@dataclass
class StreamState:
    """What the server sent on one stream."""

    header_blocks: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    data_bytes: int = 0
    ended: bool = False
    reset: int | None = None
    ended_at: float | None = None

    def header(self, name: bytes) -> bytes | None:
        for block in reversed(self.header_blocks):
            for key, value in block:
                if key == name:
                    return value
        return None

    @property
    def grpc_status(self) -> int | None:
        value = self.header(b"grpc-status")
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str:
        return (self.header(b"grpc-message") or b"").decode("utf-8", "replace")

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawConnection:
    """A socket to the server that sends exactly what it is given and parses what comes
    back (``pump``): HEADERS are HPACK-decoded per stream, DATA counted, RST_STREAM and
    GOAWAY recorded, the server's SETTINGS and WINDOW_UPDATEs tracked so that a caller
    can send DATA within the windows. It acknowledges the server's SETTINGS
    (``ack_settings``) and gives back credit for what it receives (``auto_window``)
    unless told not to. Never reading is up to the caller: just don't ``pump``."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, ack_settings: bool = True,
                 auto_window: bool = True, keep_data: int = 64 * KiB,
                 connect_timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # before connect, so the window it offers is small
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(connect_timeout)
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.ack_settings = ack_settings
        self.auto_window = auto_window
        self.keep_data = keep_data
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.streams: dict[int, StreamState] = {}
        self.server_settings: dict[int, int] = {}
        self.goaway: GoAwayFrame | None = None
        self.goaway_at: float | None = None
        self.closed = False  # EOF or reset seen, or a send failed
        self.close_reason = ""
        self.frame_counts: dict[int, int] = {}
        self.send_window = DEFAULT_WINDOW  # connection window for our DATA
        self.stream_send_windows: dict[int, int] = {}
        self.peer_initial_window = DEFAULT_WINDOW
        self._buffer = bytearray()
        self._headers_in_progress: tuple[int, bytearray, bool] | None = None

    # -- sending -------------------------------------------------------------------

    def send(self, data: bytes, timeout: float | None = 10.0) -> bool:
        """``sendall``; False (and ``closed``) if the server closed or reset the
        connection, or the bytes could not be written within ``timeout``."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except TimeoutError:
            self.close_reason = self.close_reason or "send timed out (server not reading)"
            return False
        except OSError as exc:
            if exc.errno in _CLOSED_ERRNOS:
                self._mark_closed(f"send failed: {errno.errorcode.get(exc.errno, exc.errno)}")
                return False
            raise

    def start(self, settings: dict[int, int] | None = None,
              connection_window: int | None = None) -> bool:
        """Send :func:`preface`."""
        return self.send(preface(settings, connection_window))

    def send_data(self, stream_id: int, payload: bytes, end_stream: bool = False) -> int:
        """Send as much of ``payload`` as the server's windows allow now (frames of at
        most the server's max frame size); returns how many bytes went."""
        frame_size = self.server_settings.get(SettingCodes.MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)
        window = min(self.send_window,
                     self.stream_send_windows.get(stream_id, self.peer_initial_window))
        n = min(len(payload), max(window, 0))
        out = []
        for offset in range(0, n, frame_size):
            chunk = payload[offset:offset + frame_size]
            last = offset + len(chunk) == len(payload)
            out.append(data_frame(stream_id, chunk, end_stream and last))
        if not out or not self.send(b"".join(out)):
            return 0
        self.send_window -= n
        self.stream_send_windows[stream_id] = \
            self.stream_send_windows.get(stream_id, self.peer_initial_window) - n
        return n

    # -- receiving -----------------------------------------------------------------

    def pump(self, timeout: float = 0.0, limit: int = 4 * MiB) -> bool:
        """Read what is there (waiting up to ``timeout`` for the first bytes, reading at
        most ``limit``) and handle its frames. False once the connection is closed."""
        if self.closed:
            return False
        got = 0
        wait = timeout
        while got < limit:
            ready, _, _ = select.select([self.sock], [], [], wait)
            if not ready:
                break
            try:
                chunk = self.sock.recv(256 * KiB)
            except OSError as exc:
                if exc.errno in _CLOSED_ERRNOS:
                    self._mark_closed(f"recv failed: {errno.errorcode.get(exc.errno)}")
                    break
                raise
            if not chunk:
                self._mark_closed("EOF")
                break
            got += len(chunk)
            self._buffer += chunk
            wait = 0.0
        self._parse()
        return not self.closed

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Pump until ``predicate()`` holds (True), the connection closes or time is up."""
        deadline = time.monotonic() + timeout
        for _ in range(1_000_000):  # each pass waits or reads: bounded by time first
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.pump(min(remaining, 0.1)):
                break
        return predicate()

    def wait_done(self, stream_ids: Iterable[int], timeout: float) -> bool:
        """Pump until every one of ``stream_ids`` has ended or been reset."""
        ids = list(stream_ids)
        return self.wait_for(lambda: all(self.stream(i).done for i in ids), timeout)

    def wait_closed(self, timeout: float) -> bool:
        """True once the server has closed the connection (EOF or reset)."""
        self.wait_for(lambda: self.closed, timeout)
        return self.closed

    def stream(self, stream_id: int) -> StreamState:
        return self.streams.setdefault(stream_id, StreamState())

    def _mark_closed(self, reason: str) -> None:
        self.closed = True
        self.close_reason = self.close_reason or reason

    def _parse(self) -> None:
        buf = self._buffer
        offset = 0
        replies: list[bytes] = []
        while len(buf) - offset >= 9:
            f, length = Frame.parse_frame_header(memoryview(bytes(buf[offset:offset + 9])))
            if len(buf) - offset - 9 < length:
                break
            body = bytes(buf[offset + 9:offset + 9 + length])
            ftype = buf[offset + 3]
            offset += 9 + length
            self.frame_counts[ftype] = self.frame_counts.get(ftype, 0) + 1
            f.parse_body(memoryview(body))
            self._handle(f, ftype, length, replies)
        del buf[:offset]
        if replies:
            self.send(b"".join(replies))

    def _handle(self, f: Frame, ftype: int, length: int, replies: list[bytes]) -> None:
        if isinstance(f, SettingsFrame):
            if "ACK" not in f.flags:
                for code, value in f.settings.items():
                    if code == SettingCodes.INITIAL_WINDOW_SIZE:
                        delta = value - self.peer_initial_window
                        for sid in self.stream_send_windows:
                            self.stream_send_windows[sid] += delta
                        self.peer_initial_window = value
                    self.server_settings[code] = value
                if self.ack_settings:
                    replies.append(settings_frame(ack=True))
        elif isinstance(f, WindowUpdateFrame):
            if f.stream_id == 0:
                self.send_window += f.window_increment
            else:
                self.stream_send_windows[f.stream_id] = self.stream_send_windows.get(
                    f.stream_id, self.peer_initial_window) + f.window_increment
        elif isinstance(f, GoAwayFrame):
            self.goaway = f
            self.goaway_at = time.monotonic()
        elif isinstance(f, RstStreamFrame):
            s = self.stream(f.stream_id)
            s.reset = f.error_code
            s.ended_at = s.ended_at or time.monotonic()
        elif isinstance(f, DataFrame):
            s = self.stream(f.stream_id)
            s.data_bytes += len(f.data)
            if len(s.data) < self.keep_data:
                s.data += f.data[:self.keep_data - len(s.data)]
            if "END_STREAM" in f.flags:
                s.ended, s.ended_at = True, time.monotonic()
            if self.auto_window and length:
                replies.append(window_update_frame(0, length))
                if "END_STREAM" not in f.flags:
                    replies.append(window_update_frame(f.stream_id, length))
        elif isinstance(f, (HeadersFrame, ContinuationFrame)):
            if isinstance(f, HeadersFrame):
                self._headers_in_progress = (f.stream_id, bytearray(f.data),
                                             "END_STREAM" in f.flags)
            elif self._headers_in_progress is not None:
                self._headers_in_progress[1].extend(f.data)
            if "END_HEADERS" in f.flags and self._headers_in_progress is not None:
                sid, block, end = self._headers_in_progress
                self._headers_in_progress = None
                s = self.stream(sid)
                s.header_blocks.append([(bytes(k), bytes(v))
                                        for k, v in self.decoder.decode(bytes(block), raw=True)])
                if end:
                    s.ended, s.ended_at = True, time.monotonic()
        elif isinstance(f, PingFrame):
            if "ACK" not in f.flags:
                replies.append(ping_frame(f.opaque_data, ack=True))

    def goaway_code(self) -> int | None:
        return None if self.goaway is None else int(self.goaway.error_code)

    def close(self, abort: bool = False) -> None:
        """Close the socket; ``abort``: with a TCP reset (SO_LINGER 0), so that what the
        server has not read yet is dropped, as when an attacker's process goes away."""
        self.closed = True
        with contextlib.suppress(OSError):
            if abort:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.close()


class Attacker:
    """Every socket an attack opens, so that all are closed at the end whatever
    happened (the conftest fixture calls ``close_all``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[RawConnection] = []
        self.sockets: list[socket.socket] = []

    def connect(self, **options: Any) -> RawConnection:
        conn = RawConnection(self.port, **options)
        self.connections.append(conn)
        return conn

    def open_idle(self, count: int, timeout: float = 30.0
                  ) -> tuple[list[socket.socket], list[float]]:
        """``count`` TCP connections that send nothing at all (not even the preface),
        and the monotonic time each was connected."""
        deadline = time.monotonic() + timeout
        opened: list[socket.socket] = []
        times: list[float] = []
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sockets.append(s)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.connect(("127.0.0.1", self.port))
            s.setblocking(False)
            opened.append(s)
            times.append(time.monotonic())
        return opened, times

    def close_all(self) -> None:
        for conn in self.connections:
            conn.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()
        self.connections.clear()
        self.sockets.clear()


def wait_all_closed(sockets: Sequence[socket.socket], timeout: float) -> dict[int, float]:
    """Read (and drop) whatever the server sends on each idle socket until it closes
    them: ``{index in sockets: monotonic time its close was seen}`` for those closed
    within ``timeout`` (one found closed at once counts as closed now)."""
    import selectors

    selector = selectors.DefaultSelector()
    try:
        for index, s in enumerate(sockets):
            selector.register(s, selectors.EVENT_READ, index)
        closed: dict[int, float] = {}
        deadline = time.monotonic() + timeout
        while len(closed) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(min(remaining, 0.2)):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    chunk = s.recv(64 * KiB)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(s)
                    closed[key.data] = time.monotonic()
        return closed
    finally:
        selector.close()


# ---------------------------------------------------------------------- killable client


def open_streams_forever(port: int, count: int) -> None:
    """Open ``count`` server-stream calls asking for far more than the (zero) window
    lets through, say READY on stdout, and wait to be killed."""
    conn = RawConnection(port, auto_window=False)
    conn.start({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    block = literal_block(request_headers("Stream"))
    request = grpc_message(struct.pack("!II", 1000, 64 * KiB))
    out = bytearray()
    for i in range(count):
        sid = 1 + 2 * i
        out += header_frames(sid, block) + data_frame(sid, request, True)
    conn.send(bytes(out))
    print("READY", flush=True)
    end = time.monotonic() + 120
    while time.monotonic() < end:  # keep reading (so the server's writes do not block)
        conn.pump(0.5)


def spawn_stream_client(port: int, count: int, timeout: float = 20.0) -> subprocess.Popen:
    """Start :func:`open_streams_forever` in a subprocess; return once it said READY."""
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "open-streams",
                             str(port), str(count)], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = os.read(proc.stdout.fileno(), 64) if ready else b""
    if not line.startswith(b"READY"):
        kill(proc)
        raise RuntimeError(f"the stream client did not start: {line!r}")
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL one of our subprocesses by its PID and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "open-streams":
        open_streams_forever(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit("usage: harness.py open-streams PORT COUNT")
