"""The benchmark's clients: ``python -m tests.benchmark.clients SYSTEM SCENARIO PORT``.

Runs one scenario against a running server of the same system and prints one JSON line:
``{"system", "scenario", "metrics": {name: number}, "count", "target", "capped",
"elapsed_s", "notes"}`` (or ``"error"`` instead of metrics when it failed). Every loop
is bounded by its count and by ``--cap`` seconds, after which it stops and reports
what it measured with ``capped`` set; a watchdog ends the process if a call hangs.

dubbo and grpcio share the scenario code through ``SyncStub`` (the systems' own
callables, called directly in the timed loops); grpclib has asyncio counterparts.
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
    SERVICE,
    STREAMS_PER_CONNECTION,
    SYSTEMS,
    THROUGHPUT_CALLERS,
    Counts,
    decode_count,
    path,
    stream_request,
)

SCENARIOS = ("unary_latency", "unary_throughput", "server_stream", "client_stream",
             "ping_pong", "large_unary", "connect", "idle_streams")
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
class SyncStub:
    """One client (one connection) of a thread-per-call system."""

    echo: Callable[..., bytes]
    server_stream: Callable[..., Any]  # -> iterator of replies with .cancel()
    client_stream: Callable[..., bytes]
    ping_pong: Callable[..., Any]
    hold: Callable[..., Any]
    close: Callable[[], None]


def dubbo_stub(port: int) -> SyncStub:
    import dubbo
    from dubbo.configs import ReferenceConfig

    client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                          max_receive_message_size=MAX_MESSAGE_SIZE,
                          max_send_message_size=MAX_MESSAGE_SIZE)
    return SyncStub(client.unary("Echo"), client.server_stream("ServerStream"),
                    client.client_stream("ClientStream"), client.bidi_stream("PingPong"),
                    client.bidi_stream("Hold"), client.close)


def grpcio_stub(port: int) -> SyncStub:
    import grpc

    # A local subchannel pool makes every channel open its own connection (grpcio
    # otherwise shares one between channels to the same target).
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ("grpc.enable_http_proxy", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ])
    return SyncStub(channel.unary_unary(path("Echo")),
                    channel.unary_stream(path("ServerStream")),
                    channel.stream_unary(path("ClientStream")),
                    channel.stream_stream(path("PingPong")),
                    channel.stream_stream(path("Hold")), channel.close)


def sync_unary_latency(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    echo = stub.echo
    for _ in range(counts.warmup):
        check(echo(PAYLOAD) == PAYLOAD, "echo returned other bytes")
    clock = time.perf_counter_ns
    samples: list[int] = []
    start = clock()
    for _ in range(counts.unary_calls):
        before = clock()
        echo(PAYLOAD)
        samples.append(clock() - before)
        if cap.over():
            break
    return latency_result(samples, counts.unary_calls, (clock() - start) / 1e9)


def sync_unary_throughput(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    warmup = Counts(throughput_calls_per_caller=max(1, counts.warmup // THROUGHPUT_CALLERS))
    _threaded_calls(stub.echo, warmup, cap)
    done, elapsed = _threaded_calls(stub.echo, counts, cap)
    return rate_result(done, counts.throughput_calls_per_caller * THROUGHPUT_CALLERS,
                       elapsed, "calls_per_s")


def _threaded_calls(echo: Callable[..., bytes], counts: Counts, cap: Cap) -> tuple[int, float]:
    per_caller = counts.throughput_calls_per_caller
    barrier = threading.Barrier(THROUGHPUT_CALLERS + 1)
    done = [0] * THROUGHPUT_CALLERS
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        barrier.wait()
        try:
            for _ in range(per_caller):
                echo(PAYLOAD)
                done[index] += 1
                if cap.over():
                    return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True)
               for i in range(THROUGHPUT_CALLERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return sum(done), elapsed


def sync_server_stream(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    for _ in stub.server_stream(stream_request(counts.warmup, PAYLOAD_SIZE)):
        pass
    target = counts.stream_messages
    count = 0
    start = time.perf_counter()
    replies = stub.server_stream(stream_request(target, PAYLOAD_SIZE))
    for reply in replies:
        count += 1
        if count % CHECK_EVERY == 0:
            check(len(reply) == PAYLOAD_SIZE, f"reply of {len(reply)} bytes")
            if cap.over():
                replies.cancel()
                break
    elapsed = time.perf_counter() - start
    return rate_result(count, target, elapsed, "messages_per_s")


def sync_client_stream(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    check(decode_count(stub.client_stream(iter([PAYLOAD] * counts.warmup)))
          == counts.warmup, "warm-up count")
    target = counts.stream_messages
    sent = 0

    def requests() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(target):
            if sent % CHECK_EVERY == 0 and cap.over():
                return
            sent += 1
            yield PAYLOAD

    start = time.perf_counter()
    counted = decode_count(stub.client_stream(requests()))
    elapsed = time.perf_counter() - start
    check(counted == sent, f"server counted {counted} of {sent} requests")
    return rate_result(counted, target, elapsed, "messages_per_s")


def sync_ping_pong(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    replies = stub.ping_pong(iter(requests.get, None))
    for _ in range(counts.warmup):
        requests.put(PAYLOAD)
        check(next(replies) == PAYLOAD, "ping-pong reply")
    target = counts.ping_pongs
    done = 0
    start = time.perf_counter()
    for _ in range(target):
        requests.put(PAYLOAD)
        next(replies)
        done += 1
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    requests.put(None)
    check(next(replies, None) is None, "ping-pong stream did not end")
    return rate_result(done, target, elapsed, "round_trips_per_s")


def sync_large_unary(stub: SyncStub, counts: Counts, cap: Cap) -> Result:
    payload = b"\xab" * LARGE_SIZE
    check(stub.echo(payload) == payload, "large echo returned other bytes")
    samples: list[int] = []
    start = time.perf_counter()
    for _ in range(counts.large_calls):
        before = time.perf_counter_ns()
        reply = stub.echo(payload)
        samples.append(time.perf_counter_ns() - before)
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    check(len(reply) == LARGE_SIZE, "large reply size")
    return large_result(samples, counts.large_calls, elapsed)


def large_result(samples: list[int], target: int, elapsed: float) -> Result:
    """MB/s counts request and reply bytes (10^6 bytes per MB); p50/p99 of one echo."""
    done = len(samples)
    ordered = sorted(samples)
    return Result({"mb_per_s": 2 * LARGE_SIZE * done / elapsed / 1e6,
                   "p50_ms": percentile(ordered, 50) / 1e6,
                   "p99_ms": percentile(ordered, 99) / 1e6},
                  done, target, elapsed, capped=done < target)


def sync_connect(factory: Callable[[int], SyncStub], port: int, counts: Counts,
                 cap: Cap) -> Result:
    samples: list[int] = []
    start = time.perf_counter()
    for i in range(CONNECT_WARMUP + counts.connects):
        before = time.perf_counter_ns()
        stub = factory(port)
        try:
            check(stub.echo(PAYLOAD) == PAYLOAD, "first call reply")
            after = time.perf_counter_ns()
        finally:
            stub.close()
        if i >= CONNECT_WARMUP:
            samples.append(after - before)
        if cap.over():
            break
    return connect_result(samples, counts.connects, time.perf_counter() - start)


def connect_result(samples_ns: list[int], target: int, elapsed: float) -> Result:
    return Result({"ms": statistics.median(samples_ns) / 1e6,
                   "min_ms": min(samples_ns) / 1e6, "max_ms": max(samples_ns) / 1e6},
                  len(samples_ns), target, elapsed, capped=len(samples_ns) < target)


def sync_idle_streams(factory: Callable[[int], SyncStub], port: int, counts: Counts,
                      cap: Cap, server_pid: int, system: str) -> Result:
    target = counts.idle_streams
    per_connection = STREAMS_PER_CONNECTION[system]
    stubs = [factory(port) for _ in range(-(-target // per_connection))]
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


def run_sync(system: str, scenario: str, port: int, counts: Counts, cap: Cap,
             server_pid: int) -> Result:
    factory = dubbo_stub if system == "dubbo" else grpcio_stub
    if scenario == "connect":
        return sync_connect(factory, port, counts, cap)
    if scenario == "idle_streams":
        return sync_idle_streams(factory, port, counts, cap, server_pid, system)
    measure: Callable[[SyncStub, Counts, Cap], Result] = {
        "unary_latency": sync_unary_latency,
        "unary_throughput": sync_unary_throughput,
        "server_stream": sync_server_stream,
        "client_stream": sync_client_stream,
        "ping_pong": sync_ping_pong,
        "large_unary": sync_large_unary,
    }[scenario]
    stub = factory(port)
    try:
        return measure(stub, counts, cap)
    finally:
        stub.close()


# -- grpclib: asyncio ----------------------------------------------------------------

def grpclib_channel(port: int) -> Any:
    from grpclib.client import Channel

    from .rawcodec import RawCodec

    return Channel("127.0.0.1", port, codec=RawCodec())


def _grpclib_open(channel: Any, method: str) -> Any:
    """A ``grpclib.client.Stream`` for a streaming method (used with ``async with``)."""
    from grpclib.const import Cardinality

    cardinality = {"ServerStream": Cardinality.UNARY_STREAM,
                   "ClientStream": Cardinality.STREAM_UNARY}.get(method,
                                                                Cardinality.STREAM_STREAM)
    return channel.request(path(method), cardinality, bytes, bytes)


def _grpclib_echo(channel: Any) -> Callable[[bytes], Awaitable[bytes]]:
    from grpclib.client import UnaryUnaryMethod

    return UnaryUnaryMethod(channel, path("Echo"), bytes, bytes)


async def grpclib_unary_latency(channel: Any, counts: Counts, cap: Cap) -> Result:
    echo = _grpclib_echo(channel)
    for _ in range(counts.warmup):
        check(await echo(PAYLOAD) == PAYLOAD, "echo returned other bytes")
    clock = time.perf_counter_ns
    samples: list[int] = []
    start = clock()
    for _ in range(counts.unary_calls):
        before = clock()
        await echo(PAYLOAD)
        samples.append(clock() - before)
        if cap.over():
            break
    return latency_result(samples, counts.unary_calls, (clock() - start) / 1e9)


async def grpclib_unary_throughput(channel: Any, counts: Counts, cap: Cap) -> Result:
    echo = _grpclib_echo(channel)
    warmup = Counts(throughput_calls_per_caller=max(1, counts.warmup // THROUGHPUT_CALLERS))
    await _concurrent_calls(echo, warmup, cap)
    done, elapsed = await _concurrent_calls(echo, counts, cap)
    return rate_result(done, counts.throughput_calls_per_caller * THROUGHPUT_CALLERS,
                       elapsed, "calls_per_s")


async def _concurrent_calls(echo: Callable[[bytes], Awaitable[bytes]], counts: Counts,
                            cap: Cap) -> tuple[int, float]:
    per_caller = counts.throughput_calls_per_caller

    async def caller() -> int:
        done = 0
        for _ in range(per_caller):
            await echo(PAYLOAD)
            done += 1
            if cap.over():
                break
        return done

    start = time.perf_counter()
    done = await asyncio.gather(*(caller() for _ in range(THROUGHPUT_CALLERS)))
    return sum(done), time.perf_counter() - start


async def grpclib_server_stream(channel: Any, counts: Counts, cap: Cap) -> Result:
    await _grpclib_count_replies(channel, counts.warmup, None)
    target = counts.stream_messages
    start = time.perf_counter()
    count = await _grpclib_count_replies(channel, target, cap)
    return rate_result(count, target, time.perf_counter() - start, "messages_per_s")


async def _grpclib_count_replies(channel: Any, target: int, cap: Cap | None) -> int:
    count = 0
    async with _grpclib_open(channel, "ServerStream") as stream:
        await stream.send_message(stream_request(target, PAYLOAD_SIZE), end=True)
        while (reply := await stream.recv_message()) is not None:
            count += 1
            if count % CHECK_EVERY == 0 and cap is not None and cap.over():
                await stream.cancel()
                break
        check(len(reply or PAYLOAD) == PAYLOAD_SIZE, "reply size")
    return count


async def grpclib_client_stream(channel: Any, counts: Counts, cap: Cap) -> Result:
    await _grpclib_send_requests(channel, counts.warmup, None)
    target = counts.stream_messages
    start = time.perf_counter()
    count = await _grpclib_send_requests(channel, target, cap)
    return rate_result(count, target, time.perf_counter() - start, "messages_per_s")


async def _grpclib_send_requests(channel: Any, target: int, cap: Cap | None) -> int:
    sent = 0
    async with _grpclib_open(channel, "ClientStream") as stream:
        for _ in range(target):
            if sent % CHECK_EVERY == 0 and cap is not None and cap.over():
                break
            await stream.send_message(PAYLOAD)
            sent += 1
        await stream.end()
        counted = decode_count(await stream.recv_message())
    check(counted == sent, f"server counted {counted} of {sent} requests")
    return counted


async def grpclib_ping_pong(channel: Any, counts: Counts, cap: Cap) -> Result:
    target = counts.ping_pongs
    done = 0
    async with _grpclib_open(channel, "PingPong") as stream:
        for _ in range(counts.warmup):
            await stream.send_message(PAYLOAD)
            check(await stream.recv_message() == PAYLOAD, "ping-pong reply")
        start = time.perf_counter()
        for _ in range(target):
            await stream.send_message(PAYLOAD)
            await stream.recv_message()
            done += 1
            if cap.over():
                break
        elapsed = time.perf_counter() - start
        await stream.end()
        check(await stream.recv_message() is None, "ping-pong stream did not end")
    return rate_result(done, target, elapsed, "round_trips_per_s")


async def grpclib_large_unary(channel: Any, counts: Counts, cap: Cap) -> Result:
    echo = _grpclib_echo(channel)
    payload = b"\xab" * LARGE_SIZE
    check(await echo(payload) == payload, "large echo returned other bytes")
    samples: list[int] = []
    start = time.perf_counter()
    for _ in range(counts.large_calls):
        before = time.perf_counter_ns()
        reply = await echo(payload)
        samples.append(time.perf_counter_ns() - before)
        if cap.over():
            break
    elapsed = time.perf_counter() - start
    check(len(reply) == LARGE_SIZE, "large reply size")
    return large_result(samples, counts.large_calls, elapsed)


async def grpclib_connect(port: int, counts: Counts, cap: Cap) -> Result:
    samples: list[int] = []
    start = time.perf_counter()
    for i in range(CONNECT_WARMUP + counts.connects):
        before = time.perf_counter_ns()
        channel = grpclib_channel(port)
        try:
            check(await _grpclib_echo(channel)(PAYLOAD) == PAYLOAD, "first call reply")
            after = time.perf_counter_ns()
        finally:
            channel.close()
        if i >= CONNECT_WARMUP:
            samples.append(after - before)
        if cap.over():
            break
    return connect_result(samples, counts.connects, time.perf_counter() - start)


async def grpclib_idle_streams(port: int, counts: Counts, cap: Cap,
                               server_pid: int) -> Result:
    target = counts.idle_streams
    per_connection = STREAMS_PER_CONNECTION["grpclib"]
    channels = [grpclib_channel(port) for _ in range(-(-target // per_connection))]
    release = asyncio.Event()
    opened = asyncio.Semaphore(0)

    async def hold(channel: Any) -> None:
        async with _grpclib_open(channel, "Hold") as stream:
            await stream.send_message(PAYLOAD)
            check(await stream.recv_message() == HOLD_ACK, "hold ack")
            opened.release()
            await release.wait()
            await stream.end()
            check(await stream.recv_message() is None, "hold stream did not end")

    try:
        for channel in channels:
            check(await _grpclib_echo(channel)(PAYLOAD) == PAYLOAD, "warm-up echo")
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


async def run_grpclib(scenario: str, port: int, counts: Counts, cap: Cap,
                      server_pid: int) -> Result:
    if scenario == "connect":
        return await grpclib_connect(port, counts, cap)
    if scenario == "idle_streams":
        return await grpclib_idle_streams(port, counts, cap, server_pid)
    measure: Callable[[Any, Counts, Cap], Awaitable[Result]] = {
        "unary_latency": grpclib_unary_latency,
        "unary_throughput": grpclib_unary_throughput,
        "server_stream": grpclib_server_stream,
        "client_stream": grpclib_client_stream,
        "ping_pong": grpclib_ping_pong,
        "large_unary": grpclib_large_unary,
    }[scenario]
    channel = grpclib_channel(port)
    try:
        return await measure(channel, counts, cap)
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
    cap = Cap(args.cap)
    try:
        if args.system == "grpclib":
            result = asyncio.run(run_grpclib(args.scenario, args.port, counts, cap,
                                             args.server_pid))
        else:
            result = run_sync(args.system, args.scenario, args.port, counts, cap,
                              args.server_pid)
    except Exception as exc:  # reported as the cell's error
        emit({**header, "error": f"{type(exc).__name__}: {exc}"})
        os._exit(1)
    emit({**header, **asdict(result)})
    os._exit(0)  # do not wait for the libraries' background threads


if __name__ == "__main__":
    main()
