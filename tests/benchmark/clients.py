"""The benchmark's clients: ``python -m tests.benchmark.clients SYSTEM SCENARIO PORT``.

Runs one scenario against a running server of the same system and prints one JSON line:
``{"system", "scenario", "metrics": {name: number}, "count", "target", "capped",
"elapsed_s", "notes"}`` (or ``"error"`` instead of metrics when it failed). Every loop
is bounded by its count and by ``--cap`` seconds, after which it stops and reports
what it measured with ``capped`` set; a watchdog ends the process if a call hangs.

dubbo and grpcio share the scenario code through ``SyncStub`` (the systems' own
callables, called directly in the timed loops); grpclib has asyncio counterparts; the
floor (floor.py) its own loops. A ``Workload`` says what the calls carry: raw bytes, or
the protobuf messages of messages.py (``pb_*`` scenarios), which each system serialises
and parses on its own protobuf path.

Every timed section is a ``Span``: besides the wall clock it reads this process's CPU
time and the server's (its process and any children, from /proc), reported per
operation as ``client_cpu_us`` and ``server_cpu_us``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .common import (
    HOLD_ACK,
    LARGE_SIZE,
    MAX_MESSAGE_SIZE,
    PAYLOAD,
    PAYLOAD_SIZE,
    PB_SERVICE,
    SCENARIOS,
    SERVICE,
    STREAMS_PER_CONNECTION,
    SYSTEMS,
    THROUGHPUT_CALLERS,
    Counts,
    base_scenario,
    decode_count,
    is_protobuf,
    path,
    stream_request,
    supports,
)

__all__ = ["SCENARIOS", "main"]
CHECK_EVERY = 1024  # streamed messages between two looks at the clock
CONNECT_WARMUP = 2
WATCHDOG_GRACE = 20.0  # seconds past the cap before a hung measurement is abandoned


@dataclass
class Result:
    metrics: dict[str, float]
    count: int  # operations timed
    target: int  # operations asked for
    elapsed_s: float
    capped: bool = False
    notes: list[str] = field(default_factory=list)


class Cap:
    """A measurement's wall-clock budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def over(self) -> bool:
        return time.monotonic() >= self.deadline

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


# -- what calls carry ---------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """Raw bytes or protobuf messages: the requests, the checks of the replies, and the
    (de)serializers and message types the clients pass to their library."""

    service: str
    small: Any  # the request of unary, ping-pong and client-stream calls
    small_ok: Callable[[Any], bool]
    stream_request: Callable[[int], Any]  # ServerStream's request for n replies
    stream_reply_ok: Callable[[Any], bool]
    count_of: Callable[[Any], int]  # ClientStream's reply -> requests counted
    large_method: str
    make_large: Callable[[], Any]
    large_ok: Callable[[Any], bool]
    # method -> (request serializer, reply deserializer): None for raw bytes
    codecs: dict[str, tuple[Any, Any]]
    # method -> (request type, reply type), for grpclib
    types: dict[str, tuple[Any, Any]]


def raw_workload() -> Workload:
    methods = ("Echo", "ServerStream", "ClientStream", "PingPong", "Hold")
    return Workload(SERVICE, PAYLOAD, lambda reply: bool(reply == PAYLOAD),
                    lambda n: stream_request(n, PAYLOAD_SIZE),
                    lambda reply: len(reply) == PAYLOAD_SIZE, decode_count,
                    "Echo", lambda: b"\xab" * LARGE_SIZE,
                    lambda reply: len(reply) == LARGE_SIZE,
                    {m: (None, None) for m in methods}, {m: (bytes, bytes) for m in methods})


def pb_workload() -> Workload:
    from .messages import NAME, Blob, Count, HelloReply, HelloRequest, StreamRequest

    types = {"Echo": (HelloRequest, HelloReply), "ServerStream": (StreamRequest, HelloReply),
             "ClientStream": (HelloRequest, Count), "PingPong": (HelloRequest, HelloReply),
             "BlobEcho": (Blob, Blob)}
    return Workload(PB_SERVICE, HelloRequest(name=NAME),
                    lambda reply: bool(reply.message == NAME),
                    lambda n: StreamRequest(count=n, name=NAME),
                    lambda reply: bool(reply.message == NAME), lambda reply: int(reply.count),
                    "BlobEcho", lambda: Blob(data=b"\xab" * LARGE_SIZE),
                    lambda reply: len(reply.data) == LARGE_SIZE,
                    {m: (req.SerializeToString, rep.FromString)
                     for m, (req, rep) in types.items()}, types)


# -- CPU time --------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, from /proc; 0.0 where
    /proc cannot be read. Children count because a server may serve from several
    processes."""
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, CPU seconds)
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15
        stats[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    tree = {pid}
    for _ in range(8):  # depth bound
        grown = {p for p, (parent, _) in stats.items() if parent in tree} | tree
        if grown == tree:
            break
        tree = grown
    return sum(stats[p][1] for p in tree if p in stats)


class Span:
    """A timed section's CPU time: this process's (every thread) and the server's."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.client_s = self.server_s = 0.0
        self._client0 = self._server0 = 0.0
        self.ended = False

    def begin(self) -> None:
        self._server0 = process_tree_cpu(self.server_pid) if self.server_pid else 0.0
        self._client0 = time.process_time()

    def end(self) -> None:
        self.client_s = time.process_time() - self._client0
        self.ended = True
        if self.server_pid:
            self.server_s = process_tree_cpu(self.server_pid) - self._server0

    def add_to(self, result: Result) -> Result:
        if result.count and self.ended:
            result.metrics["client_cpu_us"] = self.client_s / result.count * 1e6
            if self.server_pid:
                result.metrics["server_cpu_us"] = self.server_s / result.count * 1e6
        return result


def rate_result(count: int, target: int, elapsed: float, name: str) -> Result:
    return Result({name: count / elapsed}, count, target, elapsed, capped=count < target)


def latency_result(samples_ns: list[int], target: int, elapsed: float) -> Result:
    ordered = sorted(samples_ns)
    return Result({"calls_per_s": len(ordered) / elapsed,
                   "p50_us": percentile(ordered, 50) / 1e3,
                   "p99_us": percentile(ordered, 99) / 1e3},
                  len(ordered), target, elapsed, capped=len(ordered) < target)


def percentile(ordered: list[int], pct: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def read_proc_status(pid: int) -> dict[str, float]:
    """VmRSS (MiB) and Threads of a process, from /proc/<pid>/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key == "VmRSS":
                values["rss_mib"] = int(value.split()[0]) / 1024
            elif key == "Threads":
                values["threads"] = int(value)
    return values


# -- dubbo and grpcio: blocking stubs -------------------------------------------------

@dataclass
class Ctx:
    """What a scenario function needs besides its stub."""

    work: Workload
    counts: Counts
    cap: Cap
    span: Span


def _unsupported(*_: Any) -> Any:
    raise AssertionError("not measured for this system")


@dataclass
class SyncStub:
    """One client (one connection) of a thread-per-call system, or of the floor."""

    echo: Callable[[Any], Any]  # the small unary call
    large: Callable[[Any], Any]  # the 4 MiB unary call
    close: Callable[[], None]
    server_stream: Callable[..., Any] = _unsupported  # -> iterator of replies with .cancel()
    client_stream: Callable[..., Any] = _unsupported
    ping_pong: Callable[..., Any] = _unsupported
    hold: Callable[..., Any] = _unsupported


def dubbo_stub(port: int, work: Workload) -> SyncStub:
    import dubbo
    from dubbo.configs import ReferenceConfig

    client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{work.service}"),
                          max_receive_message_size=MAX_MESSAGE_SIZE,
                          max_send_message_size=MAX_MESSAGE_SIZE)
    c = work.codecs
    return SyncStub(client.unary("Echo", *c["Echo"]),
                    client.unary(work.large_method, *c[work.large_method]), client.close,
                    client.server_stream("ServerStream", *c["ServerStream"]),
                    client.client_stream("ClientStream", *c["ClientStream"]),
                    client.bidi_stream("PingPong", *c["PingPong"]),
                    client.bidi_stream("Hold") if "Hold" in c else _unsupported)


def grpcio_stub(port: int, work: Workload) -> SyncStub:
    import grpc

    # A local subchannel pool makes every channel open its own connection (grpcio
    # otherwise shares one between channels to the same target).
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ("grpc.enable_http_proxy", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ])

    def method(kind: Callable[..., Any], name: str) -> Any:
        serializer, deserializer = work.codecs[name]
        return kind(path(name, work.service), request_serializer=serializer,
                    response_deserializer=deserializer)

    return SyncStub(method(channel.unary_unary, "Echo"),
                    method(channel.unary_unary, work.large_method), channel.close,
                    method(channel.unary_stream, "ServerStream"),
                    method(channel.stream_unary, "ClientStream"),
                    method(channel.stream_stream, "PingPong"),
                    method(channel.stream_stream, "Hold") if "Hold" in work.codecs
                    else _unsupported)


def sync_unary_latency(stub: SyncStub, ctx: Ctx) -> Result:
    work, counts, cap = ctx.work, ctx.counts, ctx.cap
    echo, request = stub.echo, work.small
    for _ in range(counts.warmup):
        check(work.small_ok(echo(request)), "echo returned another reply")
    clock = time.perf_counter_ns
    samples: list[int] = []
    ctx.span.begin()
    start = clock()
    for _ in range(counts.unary_calls):
        before = clock()
        echo(request)
        samples.append(clock() - before)
        if cap.over():
            break
    elapsed = (clock() - start) / 1e9
    ctx.span.end()
    return latency_result(samples, counts.unary_calls, elapsed)


def sync_unary_throughput(stub: SyncStub, ctx: Ctx) -> Result:
    """16 threads share one client (one connection)."""
    return _threaded_throughput([stub.echo] * THROUGHPUT_CALLERS, ctx)


def _threaded_throughput(echoes: list[Callable[[Any], Any]], ctx: Ctx) -> Result:
    counts = ctx.counts
    warmup = max(1, counts.warmup // THROUGHPUT_CALLERS)
    _threaded_calls(echoes, ctx.work, warmup, ctx.cap, None)
    done, elapsed = _threaded_calls(echoes, ctx.work, counts.throughput_calls_per_caller,
                                    ctx.cap, ctx.span)
    return rate_result(done, counts.throughput_calls_per_caller * THROUGHPUT_CALLERS,
                       elapsed, "calls_per_s")


def _threaded_calls(echoes: list[Callable[[Any], Any]], work: Workload, per_caller: int,
                    cap: Cap, span: Span | None) -> tuple[int, float]:
    """A thread per echo callable, ``per_caller`` calls each, started together."""
    callers = len(echoes)
    barrier = threading.Barrier(callers + 1)
    done = [0] * callers
    errors: list[BaseException] = []
    request = work.small

    def caller(index: int) -> None:
        echo = echoes[index]
        barrier.wait()
        try:
            for _ in range(per_caller):
                echo(request)
                done[index] += 1
                if cap.over():
                    return
            check(work.small_ok(echo(request)), "echo returned another reply")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True)
               for i in range(callers)]
    for thread in threads:
        thread.start()
    if span is not None:
        span.begin()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if span is not None:
        span.end()
    if errors:
        raise errors[0]
    return sum(done), elapsed


def sync_unary_connections(factory: Callable[[int, Workload], SyncStub], port: int,
                           ctx: Ctx) -> Result:
    """16 threads, each with its own client (its own connection)."""
    stubs: list[SyncStub] = []
    try:
        for _ in range(THROUGHPUT_CALLERS):
            stubs.append(factory(port, ctx.work))
        return _threaded_throughput([stub.echo for stub in stubs], ctx)
    finally:
        for stub in stubs:
            stub.close()


def sync_server_stream(stub: SyncStub, ctx: Ctx) -> Result:
    work, cap = ctx.work, ctx.cap
    for _ in stub.server_stream(work.stream_request(ctx.counts.warmup)):
        pass
    target = ctx.counts.stream_messages
    count = 0
    ctx.span.begin()
    start = time.perf_counter()
    replies = stub.server_stream(work.stream_request(target))
    for reply in replies:
        count += 1
        if count % CHECK_EVERY == 0:
            check(work.stream_reply_ok(reply), "another reply")
            if cap.over():
                replies.cancel()
                break
    elapsed = time.perf_counter() - start
    ctx.span.end()
    return rate_result(count, target, elapsed, "messages_per_s")


def sync_client_stream(stub: SyncStub, ctx: Ctx) -> Result:
    work, counts, cap = ctx.work, ctx.counts, ctx.cap
    check(work.count_of(stub.client_stream(iter([work.small] * counts.warmup)))
          == counts.warmup, "warm-up count")
    target = counts.stream_messages
    sent = 0
    request = work.small

    def requests() -> Iterator[Any]:
        nonlocal sent
        for _ in range(target):
            if sent % CHECK_EVERY == 0 and cap.over():
                return
            sent += 1
            yield request

    ctx.span.begin()
    start = time.perf_counter()
    counted = work.count_of(stub.client_stream(requests()))
    elapsed = time.perf_counter() - start
    ctx.span.end()
    check(counted == sent, f"server counted {counted} of {sent} requests")
    return rate_result(counted, target, elapsed, "messages_per_s")


def sync_ping_pong(stub: SyncStub, ctx: Ctx) -> Result:
    work, cap = ctx.work, ctx.cap
    request = work.small
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    replies = stub.ping_pong(iter(requests.get, None))
    for _ in range(ctx.counts.warmup):
        requests.put(request)
        check(work.small_ok(next(replies)), "ping-pong reply")
    target = ctx.counts.ping_pongs
    done = 0
    ctx.span.begin()
    start = time.perf_counter()
    for _ in range(target):
        requests.put(request)
        next(replies)
        done += 1
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    ctx.span.end()
    requests.put(None)
    check(next(replies, None) is None, "ping-pong stream did not end")
    return rate_result(done, target, elapsed, "round_trips_per_s")


def sync_large_unary(stub: SyncStub, ctx: Ctx) -> Result:
    work, cap = ctx.work, ctx.cap
    payload = work.make_large()
    reply = stub.large(payload)
    check(work.large_ok(reply) and reply == payload, "large echo returned another reply")
    samples: list[int] = []
    ctx.span.begin()
    start = time.perf_counter()
    for _ in range(ctx.counts.large_calls):
        before = time.perf_counter_ns()
        reply = stub.large(payload)
        samples.append(time.perf_counter_ns() - before)
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    ctx.span.end()
    check(work.large_ok(reply), "large reply size")
    return large_result(samples, ctx.counts.large_calls, elapsed)


def large_result(samples: list[int], target: int, elapsed: float) -> Result:
    """MB/s counts request and reply payload bytes (10^6 bytes per MB); p50/p99 of one
    echo."""
    done = len(samples)
    ordered = sorted(samples)
    return Result({"mb_per_s": 2 * LARGE_SIZE * done / elapsed / 1e6,
                   "p50_ms": percentile(ordered, 50) / 1e6,
                   "p99_ms": percentile(ordered, 99) / 1e6},
                  done, target, elapsed, capped=done < target)


def sync_connect(factory: Callable[[int, Workload], SyncStub], port: int, ctx: Ctx) -> Result:
    work = ctx.work
    samples: list[int] = []
    start = time.perf_counter()
    for i in range(CONNECT_WARMUP + ctx.counts.connects):
        if i == CONNECT_WARMUP:
            ctx.span.begin()
        before = time.perf_counter_ns()
        stub = factory(port, work)
        try:
            check(work.small_ok(stub.echo(work.small)), "first call reply")
            after = time.perf_counter_ns()
        finally:
            stub.close()
        if i >= CONNECT_WARMUP:
            samples.append(after - before)
        if ctx.cap.over():
            break
    ctx.span.end()
    return connect_result(samples, ctx.counts.connects, time.perf_counter() - start)


def connect_result(samples_ns: list[int], target: int, elapsed: float) -> Result:
    return Result({"ms": statistics.median(samples_ns) / 1e6,
                   "min_ms": min(samples_ns) / 1e6, "max_ms": max(samples_ns) / 1e6},
                  len(samples_ns), target, elapsed, capped=len(samples_ns) < target)


def sync_idle_streams(factory: Callable[[int, Workload], SyncStub], port: int, ctx: Ctx,
                      server_pid: int, system: str) -> Result:
    cap = ctx.cap
    target = ctx.counts.idle_streams
    per_connection = STREAMS_PER_CONNECTION[system]
    stubs = [factory(port, ctx.work) for _ in range(-(-target // per_connection))]
    release = threading.Event()

    def requests() -> Iterator[bytes]:
        yield PAYLOAD
        release.wait(cap.left() + WATCHDOG_GRACE)

    calls: list[Any] = []
    try:
        for stub in stubs:
            check(stub.echo(PAYLOAD) == PAYLOAD, "warm-up echo")
        before = read_proc_status(server_pid)
        start = time.perf_counter()
        for i in range(target):
            calls.append(stubs[i % len(stubs)].hold(requests()))
        held = 0
        for call in calls:
            check(next(call) == HOLD_ACK, "hold ack")
            held += 1
            if cap.over():
                break
        elapsed = time.perf_counter() - start
        return idle_result(server_pid, before, held, target, elapsed, len(stubs))
    finally:
        release.set()
        for call in calls:
            for _ in call:
                pass
        for stub in stubs:
            stub.close()


def idle_result(server_pid: int, before: dict[str, float], held: int, target: int,
                elapsed: float, connections: int) -> Result:
    time.sleep(0.5)  # let the server settle (stream bookkeeping, lazily started threads)
    after = read_proc_status(server_pid)
    grown_kib = (after["rss_mib"] - before["rss_mib"]) * 1024
    metrics = {**after, "kib_per_stream": grown_kib / max(1, held),
               "threads_per_stream": (after["threads"] - before["threads"]) / max(1, held),
               "rss_before_mib": before["rss_mib"],
               "threads_before": before["threads"], "open_s": elapsed,
               "connections": connections}
    notes = [f"{connections} connections"] if connections > 1 else []
    return Result(metrics, held, target, elapsed, capped=held < target, notes=notes)


def run_sync(system: str, scenario: str, port: int, ctx: Ctx, server_pid: int) -> Result:
    factory = grpcio_stub if system == "grpcio" else dubbo_stub  # dubbo, dubbo-procs2
    if scenario == "connect":
        return sync_connect(factory, port, ctx)
    if scenario == "idle_streams":
        return sync_idle_streams(factory, port, ctx, server_pid, system)
    if scenario == "unary_connections":
        return sync_unary_connections(factory, port, ctx)
    measure: Callable[[SyncStub, Ctx], Result] = {
        "unary_latency": sync_unary_latency,
        "unary_throughput": sync_unary_throughput,
        "server_stream": sync_server_stream,
        "client_stream": sync_client_stream,
        "ping_pong": sync_ping_pong,
        "large_unary": sync_large_unary,
    }[scenario]
    stub = factory(port, ctx.work)
    try:
        return measure(stub, ctx)
    finally:
        stub.close()


# -- floor: one thread, plain h2 (floor.py) -------------------------------------------

def floor_method(client: Any, work: Workload, method: str) -> Callable[[Any], Any]:
    """A unary call on the floor client, serialising and parsing like the others do."""
    serializer, deserializer = work.codecs[method]
    method_path = path(method, work.service).encode()
    call = client.call
    if serializer is None:
        return lambda request: call(method_path, request)
    return lambda request: deserializer(call(method_path, serializer(request)))


def floor_stub(port: int, work: Workload) -> SyncStub:
    from .floor import FloorClient

    client = FloorClient(port)
    return SyncStub(floor_method(client, work, "Echo"),
                    floor_method(client, work, work.large_method), client.close)


def floor_unary_throughput(client: Any, ctx: Ctx) -> Result:
    """16 calls in flight on one connection, driven by the one thread."""
    counts = ctx.counts
    _floor_pipelined(client, ctx, max(1, counts.warmup // THROUGHPUT_CALLERS), None)
    done, elapsed = _floor_pipelined(client, ctx, counts.throughput_calls_per_caller,
                                     ctx.span)
    return rate_result(done, counts.throughput_calls_per_caller * THROUGHPUT_CALLERS,
                       elapsed, "calls_per_s")


def _floor_pipelined(client: Any, ctx: Ctx, per_caller: int,
                     span: Span | None) -> tuple[int, float]:
    work = ctx.work
    serializer, deserializer = work.codecs["Echo"]
    method_path = path("Echo", work.service).encode()

    def encoded() -> bytes:
        request = work.small
        return bytes(request if serializer is None else serializer(request))

    total = per_caller * THROUGHPUT_CALLERS
    started = done = 0
    reply: Any = None
    if span is not None:
        span.begin()
    start = time.perf_counter()
    while started < THROUGHPUT_CALLERS:
        client.start(method_path, encoded())
        started += 1
    while done < started:
        for _, item in client.wait():
            if item is not None:
                reply = item if deserializer is None else deserializer(item)
                continue
            done += 1
            if started < total and not ctx.cap.over():
                client.start(method_path, encoded())
                started += 1
    elapsed = time.perf_counter() - start
    if span is not None:
        span.end()
    check(work.small_ok(reply), "echo returned another reply")
    return done, elapsed


def floor_ping_pong(client: Any, ctx: Ctx) -> Result:
    work, cap = ctx.work, ctx.cap
    serializer, deserializer = work.codecs["PingPong"]
    encode = (lambda m: m) if serializer is None else serializer
    decode = (lambda m: m) if deserializer is None else deserializer

    def round_trip(stream_id: int) -> Any:
        client.send(stream_id, encode(work.small))
        return _floor_next(client, stream_id, decode)

    stream_id = client.start(path("PingPong", work.service).encode(), encode(work.small),
                             end=False)
    check(work.small_ok(_floor_next(client, stream_id, decode)), "ping-pong reply")
    for _ in range(ctx.counts.warmup - 1):
        check(work.small_ok(round_trip(stream_id)), "ping-pong reply")
    target = ctx.counts.ping_pongs
    done = 0
    ctx.span.begin()
    start = time.perf_counter()
    for _ in range(target):
        round_trip(stream_id)
        done += 1
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    ctx.span.end()
    client.end(stream_id)
    check(_floor_next(client, stream_id, decode) is None, "ping-pong stream did not end")
    return rate_result(done, target, elapsed, "round_trips_per_s")


def _floor_next(client: Any, stream_id: int, decode: Callable[[bytes], Any]) -> Any:
    """The stream's next reply message, or None when it ended."""
    while True:
        for sid, item in client.wait():
            if sid == stream_id:
                return None if item is None else decode(item)


def run_floor(scenario: str, port: int, ctx: Ctx) -> Result:
    if scenario == "connect":
        return sync_connect(floor_stub, port, ctx)
    if scenario in ("unary_latency", "large_unary"):
        stub = floor_stub(port, ctx.work)
        try:
            measure = sync_unary_latency if scenario == "unary_latency" else sync_large_unary
            return measure(stub, ctx)
        finally:
            stub.close()
    from .floor import FloorClient

    client = FloorClient(port)
    try:
        if scenario == "unary_throughput":
            return floor_unary_throughput(client, ctx)
        if scenario == "ping_pong":
            return floor_ping_pong(client, ctx)
        raise AssertionError(f"the floor does not measure {scenario}")
    finally:
        client.close()


# -- grpclib: asyncio ----------------------------------------------------------------

def grpclib_channel(port: int, work: Workload) -> Any:
    from grpclib.client import Channel

    if work.service == PB_SERVICE:
        from grpclib.encoding.proto import ProtoCodec

        return Channel("127.0.0.1", port, codec=ProtoCodec())
    from .rawcodec import RawCodec

    return Channel("127.0.0.1", port, codec=RawCodec())


def _grpclib_open(channel: Any, method: str, work: Workload) -> Any:
    """A ``grpclib.client.Stream`` for a streaming method (used with ``async with``)."""
    from grpclib.const import Cardinality

    cardinality = {"ServerStream": Cardinality.UNARY_STREAM,
                   "ClientStream": Cardinality.STREAM_UNARY}.get(method,
                                                                Cardinality.STREAM_STREAM)
    return channel.request(path(method, work.service), cardinality, *work.types[method])


def _grpclib_unary(channel: Any, method: str, work: Workload) -> Callable[[Any],
                                                                           Awaitable[Any]]:
    from grpclib.client import UnaryUnaryMethod

    return UnaryUnaryMethod(channel, path(method, work.service), *work.types[method])


async def grpclib_unary_latency(channel: Any, ctx: Ctx) -> Result:
    work, counts = ctx.work, ctx.counts
    echo, request = _grpclib_unary(channel, "Echo", work), work.small
    for _ in range(counts.warmup):
        check(work.small_ok(await echo(request)), "echo returned another reply")
    clock = time.perf_counter_ns
    samples: list[int] = []
    ctx.span.begin()
    start = clock()
    for _ in range(counts.unary_calls):
        before = clock()
        await echo(request)
        samples.append(clock() - before)
        if ctx.cap.over():
            break
    elapsed = (clock() - start) / 1e9
    ctx.span.end()
    return latency_result(samples, counts.unary_calls, elapsed)


async def grpclib_unary_throughput(channels: list[Any], ctx: Ctx) -> Result:
    """16 tasks; on one channel (one connection) or a channel each."""
    echoes = [_grpclib_unary(channels[i % len(channels)], "Echo", ctx.work)
              for i in range(THROUGHPUT_CALLERS)]
    counts = ctx.counts
    await _concurrent_calls(echoes, ctx, max(1, counts.warmup // THROUGHPUT_CALLERS), None)
    done, elapsed = await _concurrent_calls(echoes, ctx, counts.throughput_calls_per_caller,
                                            ctx.span)
    return rate_result(done, counts.throughput_calls_per_caller * THROUGHPUT_CALLERS,
                       elapsed, "calls_per_s")


async def _concurrent_calls(echoes: list[Callable[[Any], Awaitable[Any]]], ctx: Ctx,
                            per_caller: int, span: Span | None) -> tuple[int, float]:
    work, cap = ctx.work, ctx.cap

    async def caller(echo: Callable[[Any], Awaitable[Any]]) -> int:
        done = 0
        for _ in range(per_caller):
            await echo(work.small)
            done += 1
            if cap.over():
                break
        check(work.small_ok(await echo(work.small)), "echo returned another reply")
        return done

    if span is not None:
        span.begin()
    start = time.perf_counter()
    done = await asyncio.gather(*(caller(echo) for echo in echoes))
    elapsed = time.perf_counter() - start
    if span is not None:
        span.end()
    return sum(done), elapsed


async def grpclib_server_stream(channel: Any, ctx: Ctx) -> Result:
    await _grpclib_count_replies(channel, ctx.work, ctx.counts.warmup, None)
    target = ctx.counts.stream_messages
    ctx.span.begin()
    start = time.perf_counter()
    count = await _grpclib_count_replies(channel, ctx.work, target, ctx.cap)
    elapsed = time.perf_counter() - start
    ctx.span.end()
    return rate_result(count, target, elapsed, "messages_per_s")


async def _grpclib_count_replies(channel: Any, work: Workload, target: int,
                                 cap: Cap | None) -> int:
    count = 0
    last: Any = None
    async with _grpclib_open(channel, "ServerStream", work) as stream:
        await stream.send_message(work.stream_request(target), end=True)
        while (reply := await stream.recv_message()) is not None:
            last = reply
            count += 1
            if count % CHECK_EVERY == 0 and cap is not None and cap.over():
                await stream.cancel()
                break
        check(last is None or work.stream_reply_ok(last), "another reply")
    return count


async def grpclib_client_stream(channel: Any, ctx: Ctx) -> Result:
    await _grpclib_send_requests(channel, ctx.work, ctx.counts.warmup, None)
    target = ctx.counts.stream_messages
    ctx.span.begin()
    start = time.perf_counter()
    count = await _grpclib_send_requests(channel, ctx.work, target, ctx.cap)
    elapsed = time.perf_counter() - start
    ctx.span.end()
    return rate_result(count, target, elapsed, "messages_per_s")


async def _grpclib_send_requests(channel: Any, work: Workload, target: int,
                                 cap: Cap | None) -> int:
    sent = 0
    async with _grpclib_open(channel, "ClientStream", work) as stream:
        for _ in range(target):
            if sent % CHECK_EVERY == 0 and cap is not None and cap.over():
                break
            await stream.send_message(work.small)
            sent += 1
        await stream.end()
        counted = work.count_of(await stream.recv_message())
    check(counted == sent, f"server counted {counted} of {sent} requests")
    return counted


async def grpclib_ping_pong(channel: Any, ctx: Ctx) -> Result:
    work = ctx.work
    target = ctx.counts.ping_pongs
    done = 0
    async with _grpclib_open(channel, "PingPong", work) as stream:
        for _ in range(ctx.counts.warmup):
            await stream.send_message(work.small)
            check(work.small_ok(await stream.recv_message()), "ping-pong reply")
        ctx.span.begin()
        start = time.perf_counter()
        for _ in range(target):
            await stream.send_message(work.small)
            await stream.recv_message()
            done += 1
            if ctx.cap.over():
                break
        elapsed = time.perf_counter() - start
        ctx.span.end()
        await stream.end()
        check(await stream.recv_message() is None, "ping-pong stream did not end")
    return rate_result(done, target, elapsed, "round_trips_per_s")


async def grpclib_large_unary(channel: Any, ctx: Ctx) -> Result:
    work = ctx.work
    echo = _grpclib_unary(channel, work.large_method, work)
    payload = work.make_large()
    reply = await echo(payload)
    check(work.large_ok(reply) and reply == payload, "large echo returned another reply")
    samples: list[int] = []
    ctx.span.begin()
    start = time.perf_counter()
    for _ in range(ctx.counts.large_calls):
        before = time.perf_counter_ns()
        reply = await echo(payload)
        samples.append(time.perf_counter_ns() - before)
        if ctx.cap.over():
            break
    elapsed = time.perf_counter() - start
    ctx.span.end()
    check(work.large_ok(reply), "large reply size")
    return large_result(samples, ctx.counts.large_calls, elapsed)


async def grpclib_connect(port: int, ctx: Ctx) -> Result:
    work = ctx.work
    samples: list[int] = []
    start = time.perf_counter()
    for i in range(CONNECT_WARMUP + ctx.counts.connects):
        if i == CONNECT_WARMUP:
            ctx.span.begin()
        before = time.perf_counter_ns()
        channel = grpclib_channel(port, work)
        try:
            check(work.small_ok(await _grpclib_unary(channel, "Echo", work)(work.small)),
                  "first call reply")
            after = time.perf_counter_ns()
        finally:
            channel.close()
        if i >= CONNECT_WARMUP:
            samples.append(after - before)
        if ctx.cap.over():
            break
    ctx.span.end()
    return connect_result(samples, ctx.counts.connects, time.perf_counter() - start)


async def grpclib_idle_streams(port: int, ctx: Ctx, server_pid: int) -> Result:
    work, cap = ctx.work, ctx.cap
    target = ctx.counts.idle_streams
    per_connection = STREAMS_PER_CONNECTION["grpclib"]
    channels = [grpclib_channel(port, work) for _ in range(-(-target // per_connection))]
    release = asyncio.Event()
    opened = asyncio.Semaphore(0)

    async def hold(channel: Any) -> None:
        async with _grpclib_open(channel, "Hold", work) as stream:
            await stream.send_message(PAYLOAD)
            check(await stream.recv_message() == HOLD_ACK, "hold ack")
            opened.release()
            await release.wait()
            await stream.end()
            check(await stream.recv_message() is None, "hold stream did not end")

    try:
        for channel in channels:
            check(await _grpclib_unary(channel, "Echo", work)(PAYLOAD) == PAYLOAD,
                  "warm-up echo")
        before = read_proc_status(server_pid)
        start = time.perf_counter()
        tasks = [asyncio.create_task(hold(channels[i % len(channels)]))
                 for i in range(target)]
        held = 0
        while held < target and not cap.over():
            try:
                await asyncio.wait_for(opened.acquire(), cap.left() or 0.001)
            except asyncio.TimeoutError:
                break
            held += 1
        elapsed = time.perf_counter() - start
        result = idle_result(server_pid, before, held, target, elapsed, len(channels))
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), cap.left() + WATCHDOG_GRACE)
        return result
    finally:
        for channel in channels:
            channel.close()


async def run_grpclib(scenario: str, port: int, ctx: Ctx, server_pid: int) -> Result:
    if scenario == "connect":
        return await grpclib_connect(port, ctx)
    if scenario == "idle_streams":
        return await grpclib_idle_streams(port, ctx, server_pid)
    if scenario == "unary_connections":
        channels = [grpclib_channel(port, ctx.work) for _ in range(THROUGHPUT_CALLERS)]
        try:
            return await grpclib_unary_throughput(channels, ctx)
        finally:
            for channel in channels:
                channel.close()
    channel = grpclib_channel(port, ctx.work)
    try:
        if scenario == "unary_throughput":
            return await grpclib_unary_throughput([channel], ctx)
        measure: Callable[[Any, Ctx], Awaitable[Result]] = {
            "unary_latency": grpclib_unary_latency,
            "server_stream": grpclib_server_stream,
            "client_stream": grpclib_client_stream,
            "ping_pong": grpclib_ping_pong,
            "large_unary": grpclib_large_unary,
        }[scenario]
        return await measure(channel, ctx)
    finally:
        channel.close()


# -- entry point ---------------------------------------------------------------------

def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def start_watchdog(header: dict[str, Any], seconds: float) -> None:
    """If the measurement is still running ``seconds`` from now, report it hung and exit."""
    def expire() -> None:
        emit({**header, "error": f"no result {seconds:.0f} s after the start (hung call?)",
              "capped": True})
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.clients",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("port", type=int)
    parser.add_argument("--divisor", type=int, default=1,
                        help="divide the full counts by this (--quick uses 10)")
    parser.add_argument("--cap", type=float, default=60.0,
                        help="wall-clock budget of the measurement, seconds")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="the server's PID (idle_streams reads its /proc status)")
    args = parser.parse_args(argv)
    counts = Counts().scaled(args.divisor)
    header = {"system": args.system, "scenario": args.scenario}
    start_watchdog(header, args.cap + WATCHDOG_GRACE)
    if not supports(args.system, args.scenario):
        emit({**header, "error": f"{args.system} does not measure {args.scenario}"})
        os._exit(2)
    work = pb_workload() if is_protobuf(args.scenario) else raw_workload()
    ctx = Ctx(work, counts, Cap(args.cap), Span(args.server_pid))
    scenario = base_scenario(args.scenario)
    try:
        if args.system == "grpclib":
            result = asyncio.run(run_grpclib(scenario, args.port, ctx, args.server_pid))
        elif args.system == "floor":
            result = run_floor(scenario, args.port, ctx)
        else:
            result = run_sync(args.system, scenario, args.port, ctx, args.server_pid)
        ctx.span.add_to(result)
    except Exception as exc:  # reported as the cell's error
        emit({**header, "error": f"{type(exc).__name__}: {exc}"})
        os._exit(1)
    emit({**header, **asdict(result)})
    os._exit(0)  # do not wait for the libraries' background threads


if __name__ == "__main__":
    main()
