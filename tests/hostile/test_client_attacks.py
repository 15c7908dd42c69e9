"""The client against hostile and broken servers (issue 7, the "client" rows).

Each server is an evil_servers.EvilServer: raw sockets plus h2, in threads of this
test, on 127.0.0.1. What a user relies on: a call ends by its deadline or its cancel
whatever the server does, its failure is a ``dubbo.RpcError`` with a fitting code
(never an h2 exception or a traceback), one broken reply breaks one call, and a
compressed reply cannot make the client hold more memory than the limits say.

Every wait on the client is done from a helper thread joined with a bound, so a
client that hangs fails the test instead of hanging it; closing the evil server first
frees whatever the client still blocks on.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dubbo
from dubbo.configs import ReferenceConfig
from dubbo.transport.tls import client_context

try:  # tests/hostile may become a package
    from . import evil_servers as evil
except ImportError:
    import evil_servers as evil  # type: ignore[no-redef]

SERVICE = "test.Hostile"
MiB = 1024 * 1024
# A call with timeout=1 must have ended by this many seconds (the "~1.5 s").
DEADLINE_SLACK = 1.5
# How long a test waits for a call that should have ended by now before it fails.
GIVE_UP = 3.0


def client_for(port: int, **options: Any) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                        **options)


class Attempt:
    """Runs ``fn`` on a thread of its own, recording its result or exception and how
    long it took, so the test can wait for it with a bound."""

    def __init__(self, fn: Callable[[], Any], name: str = "attempt") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self.ended: float | None = None  # time.monotonic() when fn returned or raised
        self._fn = fn
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()
            self.elapsed = self.ended - started

    def wait(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def describe(self) -> str:
        if self.thread.is_alive():
            return "still blocked"
        if self.error is not None:
            return f"raised {self.error!r} after {self.elapsed:.2f}s"
        return f"returned {self.result!r:.80} after {self.elapsed:.2f}s"


def assert_rpc_error(attempt: Attempt, codes: set[dubbo.StatusCode], within: float) -> None:
    """The attempt ended by ``within`` seconds with an RpcError whose code is in ``codes``."""
    assert attempt.wait(GIVE_UP), f"call {attempt.describe()} after {GIVE_UP}s"
    assert isinstance(attempt.error, dubbo.RpcError), f"call {attempt.describe()}"
    assert attempt.error.code in codes, f"call {attempt.describe()}"
    assert attempt.elapsed is not None and attempt.elapsed <= within, \
        f"call {attempt.describe()}, expected to end within {within}s"


@pytest.fixture
def closing() -> Iterator[Callable[..., None]]:
    """``closing(a, b, ...)``: close those at teardown, in that order, even when the
    test failed. Pass the evil server before the client: closing the server frees a
    client blocked on it."""
    items: list[Any] = []
    yield lambda *objects: items.extend(objects)
    errors = []
    for item in items:
        try:
            item.close()
        except Exception as exc:  # close the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever the server does, no thread dies of an uncaught exception and dubbo
    logs no error: a hostile reply is the call's failure, never a client bug."""
    failures: list[str] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        name = args.thread.name if args.thread is not None else "?"
        failures.append(f"thread {name}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    caplog.set_level(logging.WARNING, logger="dubbo")
    try:
        yield
    finally:
        threading.excepthook = previous
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.get_records("call")
              if r.name.startswith("dubbo") and r.levelno >= logging.ERROR]
    assert not failures and not errors, f"uncaught in threads: {failures}; logged: {errors}"


def new_dubbo_threads(before: set[threading.Thread]) -> list[str]:
    """Names of dubbo threads started since ``before`` other than the client's
    connection reader and timer, which live as long as the client."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith("dubbo") and t.is_alive() and t not in before
                  and not t.name.startswith(("dubbo-client-conn", "dubbo-client-timer")))


# --------------------------------------------------------------------------- sends


@pytest.mark.timeout(30)
def test_a_request_the_server_never_reads_fails_at_the_deadline(closing):
    # Old code: still blocked in the socket send after 20 s (the deadline was not
    # looked at while sendall waited on a peer that stopped reading).
    server = evil.non_reading_server()
    client = client_for(server.port)
    closing(server, client)
    assert client.unary("warm")(b"", timeout=5) == b""  # the windows are open now
    attempt = Attempt(lambda: client.unary("sink")(bytes(4 * MiB), timeout=1))
    assert_rpc_error(attempt, {dubbo.StatusCode.DEADLINE_EXCEEDED}, DEADLINE_SLACK)
    assert server.event("blocked").is_set()  # the server really stopped reading


@pytest.mark.timeout(30)
@pytest.mark.parametrize("end", ["cancel", "deadline"])
def test_a_streamed_request_the_server_never_reads_is_freed_by_cancel_or_deadline(
        closing, end):
    # The request goes out on the client's sender thread: cancel() from another thread,
    # or the deadline, must end the call for the caller and free that thread too.
    server = evil.non_reading_server()
    client = client_for(server.port)
    closing(server, client)
    assert client.unary("warm")(b"", timeout=5) == b""
    before = set(threading.enumerate())
    timeout = 1.0 if end == "deadline" else None
    started = time.monotonic()
    replies = client.bidi_stream("sink")(iter([bytes(4 * MiB)]), timeout=timeout)
    reader = Attempt(lambda: next(replies), name="reader")
    assert server.event("blocked").wait(5), "the request never reached the server"
    if end == "cancel":
        time.sleep(0.3)  # let the sender fill the socket and block in it
        started = time.monotonic()
        Attempt(replies.cancel, name="canceller").wait(GIVE_UP)
        expected, within = dubbo.StatusCode.CANCELLED, 0.5
    else:
        expected, within = dubbo.StatusCode.DEADLINE_EXCEEDED, DEADLINE_SLACK
    assert reader.wait(GIVE_UP), f"the caller is {reader.describe()}"
    assert isinstance(reader.error, dubbo.RpcError), reader.describe()
    assert reader.error.code is expected, reader.describe()
    assert reader.ended is not None and reader.ended - started <= within, \
        f"the caller's call ended {reader.ended - started:.2f}s after the {end}"
    # The thread that was blocked sending is free as well, while the client stays open.
    deadline = started + within + 0.5
    while new_dubbo_threads(before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not new_dubbo_threads(before), \
        f"still running {time.monotonic() - started:.1f}s after the {end}: " \
        f"{new_dubbo_threads(before)}"


# --------------------------------------------------------------------------- replies


@pytest.mark.timeout(60)
def test_a_gzip_reply_stream_bomb_is_resource_exhausted_in_bounded_memory(closing):
    # Old code: past 3 GB after 5.8 MB received, since the reader inflated every
    # message as it arrived, whether or not the caller took any. Here 96 messages of
    # ~4 KB inflate to 4 MiB each (384 MiB) and then one to 64 MiB, over the limit.
    server = evil.gzip_bomb_server(messages=96, final_size=64 * MiB)
    client = client_for(server.port)
    closing(server, client)
    gc.collect()
    evil.reset_peak_rss()
    baseline = evil.rss_bytes()
    replies = client.server_stream("bomb")(b"", timeout=30)
    time.sleep(2.0)  # the whole bomb arrives while the caller takes nothing
    taken = []

    def drain() -> None:
        for message in replies:
            taken.append(len(message))  # the message itself is dropped at once

    attempt = Attempt(drain, name="drain")
    assert attempt.wait(25), f"the call is {attempt.describe()}"
    growth = evil.peak_rss_bytes() - baseline
    assert isinstance(attempt.error, dubbo.RpcError), attempt.describe()
    assert attempt.error.code is dubbo.StatusCode.RESOURCE_EXHAUSTED, attempt.describe()
    assert all(size <= evil.GZIP_BOMB_MESSAGE for size in taken)
    assert growth < 128 * MiB, \
        f"peak RSS grew by {growth / MiB:.0f} MiB taking {len(taken)} messages"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [b"2" + b"0" * 4999, b"2" + b"0" * 30],
                         ids=["5000-digits", "31-digits"])
def test_a_malformed_response_head_fails_only_its_own_call(closing, status):
    # Old code (5,000 digits): int() refused the :status, the reader thread died with
    # a traceback and every call on the connection failed.
    server = evil.bad_status_server(status)
    client = client_for(server.port)
    closing(server, client)
    method = client.unary("slow")
    other = Attempt(lambda: method(b"still here", timeout=10), name="other call")
    assert server.event("slow waiting").wait(5), f"the other call {other.describe()}"
    bad = Attempt(lambda: client.unary("bad")(b"", timeout=5), name="bad call")
    assert bad.wait(GIVE_UP) and other.wait(GIVE_UP), \
        f"the bad call {bad.describe()}, the other call {other.describe()}"
    assert other.error is None and other.result == b"still here", \
        f"the other call on the connection {other.describe()}"
    assert_rpc_error(bad, {dubbo.StatusCode.INTERNAL, dubbo.StatusCode.UNKNOWN}, 2.0)
    assert "status" in bad.error.details.lower(), bad.describe()  # type: ignore[union-attr]
    assert client.unary("echo")(b"after", timeout=5) == b"after"
    assert server.accepted == 1, "the calls did not share one connection"


def _garbage_plan(rng: random.Random) -> tuple[str, bytes, float]:
    when = rng.choice(["at-once", "after-preface", "after-settings", "http1"])
    if when == "http1":
        garbage = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    else:
        garbage = rng.randbytes(rng.randint(1, 300))
    return when, garbage, rng.choice([0.0, 0.0, 0.0, 0.005])


@pytest.mark.timeout(60)
def test_a_server_answering_the_preface_with_garbage_gives_rpc_errors_only(closing):
    # Old code: now and then h2's ProtocolError ("Invalid input
    # ConnectionInputs.SEND_HEADERS in state CLOSED") escaped the call.
    seed = int(os.environ.get("DUBBO_HOSTILE_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    plan_lock = threading.Lock()  # guards rng between the server's threads
    plans: list[tuple[str, int, float]] = []

    def choose() -> tuple[str, bytes, float]:
        with plan_lock:
            plan = _garbage_plan(rng)
            plans.append((plan[0], len(plan[1]), plan[2]))
            return plan

    server = evil.garbage_server(choose)
    closing(server)
    # Each try: a fresh client, several callers each making a few calls (a call on a
    # connection that died reconnects, to more garbage), spaced by a random few
    # hundred microseconds so that some land while the reader takes the garbage in.
    tries, callers, calls = 60, 6, 5
    pauses = [[[rng.uniform(0, 0.0005) for _ in range(calls)] for _ in range(callers)]
              for _ in range(tries)]
    wrong = []
    for attempt_no in range(tries):
        with client_for(server.port) as client:
            barrier = threading.Barrier(callers)

            def call_a_few(client: dubbo.Client = client, barrier: threading.Barrier = barrier,
                           pauses: list[float] = pauses[attempt_no][0]) -> list[Any]:
                barrier.wait(5)
                outcomes: list[Any] = []
                for pause in pauses:
                    time.sleep(pause)
                    try:
                        outcomes.append(client.unary("any")(b"hello", timeout=2))
                    except Exception as exc:
                        outcomes.append(exc)
                return outcomes

            attempts = [Attempt(functools.partial(call_a_few, pauses=pauses[attempt_no][i]),
                                name=f"caller-{i}") for i in range(callers)]
            for attempt in attempts:
                if not attempt.wait(calls * 2 + GIVE_UP):
                    wrong.append(f"try {attempt_no}: caller {attempt.describe()}")
                    continue
                for outcome in attempt.result or [attempt.error]:
                    if not (isinstance(outcome, dubbo.RpcError) and outcome.code in
                            (dubbo.StatusCode.UNAVAILABLE, dubbo.StatusCode.INTERNAL)):
                        wrong.append(f"try {attempt_no}: {outcome!r}")
    total = tries * callers * calls
    assert not wrong, (f"seed {seed} (DUBBO_HOSTILE_SEED): {len(wrong)} of {total} calls "
                       f"did not fail with dubbo.RpcError UNAVAILABLE/INTERNAL: {wrong[:5]}; "
                       f"{server.accepted} connections, the first plans: {plans[:10]}")


# --------------------------------------------------------------------------- connecting


@pytest.mark.timeout(30)
def test_a_tls_handshake_that_never_completes_ends_at_the_call_deadline(closing):
    # Old code: UNAVAILABLE after 5.0 s (connect_timeout), not DEADLINE_EXCEEDED at 1 s.
    server = evil.silent_server()
    client = client_for(server.port, ssl_context=client_context())
    closing(server, client)
    attempt = Attempt(lambda: client.unary("any")(b"", timeout=1))
    assert_rpc_error(attempt, {dubbo.StatusCode.DEADLINE_EXCEEDED}, DEADLINE_SLACK)


@pytest.mark.timeout(30)
def test_callers_do_not_queue_behind_a_stalled_tls_handshake(closing):
    # Old code: 5, 10, 15, 20 s; the client lock was held through connect and
    # handshake, and the failed handshake set no backoff.
    server = evil.silent_server()
    client = client_for(server.port, ssl_context=client_context())
    closing(server, client)
    barrier = threading.Barrier(4)

    def call() -> Any:
        barrier.wait(5)
        return client.unary("any")(b"", timeout=1)

    attempts = [Attempt(call, name=f"caller-{i}") for i in range(4)]
    deadline = time.monotonic() + GIVE_UP
    for attempt in attempts:
        attempt.wait(max(0.0, deadline - time.monotonic()))
    outcomes = [a.describe() for a in attempts]
    for attempt in attempts:
        assert not attempt.thread.is_alive(), outcomes
        assert isinstance(attempt.error, dubbo.RpcError), outcomes
        assert attempt.error.code in (dubbo.StatusCode.DEADLINE_EXCEEDED,
                                      dubbo.StatusCode.UNAVAILABLE), outcomes
        assert attempt.elapsed is not None and attempt.elapsed <= DEADLINE_SLACK, outcomes


# --------------------------------------------------------------------------- timeouts


GRPC_TIMEOUT = re.compile(rb"[0-9]{1,8}[HMSmun]")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["unary", "client_stream", "server_stream", "bidi_stream"])
@pytest.mark.parametrize("timeout", [1e12, 1e300])
def test_any_timeout_works(closing, kind, timeout):
    # Old code: OverflowError (a lock wait with a timeout past what the OS takes).
    server = evil.echo_server()
    client = client_for(server.port)
    closing(server, client)
    method = getattr(client, kind)("echo")
    if kind == "unary":
        def call() -> Any:
            return [method(b"x", timeout=timeout)]
    elif kind == "client_stream":
        def call() -> Any:
            return [method(iter([b"x"]), timeout=timeout)]
    elif kind == "server_stream":
        def call() -> Any:
            return list(method(b"x", timeout=timeout))
    else:
        def call() -> Any:
            return list(method(iter([b"x", b"y"]), timeout=timeout))
    attempt = Attempt(call)
    assert attempt.wait(10), attempt.describe()
    assert attempt.error is None, attempt.describe()
    assert b"".join(attempt.result) in (b"x", b"xy"), attempt.describe()
    timeouts = [head.get(b"grpc-timeout") for head in server.heads]
    # What goes out is a grpc-timeout the spec allows (at most 8 digits), or none.
    assert all(t is None or GRPC_TIMEOUT.fullmatch(t) for t in timeouts), timeouts


# --------------------------------------------------------------------------- what held


@pytest.mark.timeout(30)
def test_a_4_gib_reply_prefix_is_resource_exhausted_at_once(closing):
    server = evil.huge_prefix_server()
    client = client_for(server.port)
    closing(server, client)
    gc.collect()
    evil.reset_peak_rss()
    baseline = evil.rss_bytes()
    attempt = Attempt(lambda: client.unary("huge")(b"", timeout=5))
    assert_rpc_error(attempt, {dubbo.StatusCode.RESOURCE_EXHAUSTED}, 1.0)
    assert evil.peak_rss_bytes() - baseline < 64 * MiB
    # One bad reply is one bad call: the connection goes on.
    assert client.unary("plain")(b"", timeout=5) == b"fine"
    assert server.accepted == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("read", [True, False], ids=["reads", "never-reads"])
def test_a_silent_server_ends_the_call_at_its_deadline(closing, read):
    server = evil.silent_server(read=read)
    client = client_for(server.port)
    closing(server, client)
    attempt = Attempt(lambda: client.unary("any")(b"", timeout=1))
    assert_rpc_error(attempt, {dubbo.StatusCode.DEADLINE_EXCEEDED}, DEADLINE_SLACK)
