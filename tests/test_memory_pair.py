"""Protocol-level behaviour over an in-memory connection pair (tests/memory_pair.py):
a dubbo server and client over ``socket.socketpair()``, no TCP. Ported from the
real-socket tests (test_flow_control.py, test_call_semantics.py), which stay as they
are; these run the same protocol paths without a port."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from memory_pair import memory_pair

import dubbo
from dubbo.proxy.handlers import RpcMethodHandler
from dubbo.status import StatusCode

CHUNK = 100 * 1024
COUNT = 1000  # 100 MiB if nothing pushed back
BOUND = 32 * 1024 * 1024  # stream window 8 MiB + held back 1 MiB + socket buffers


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded in time
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


@pytest.mark.timeout(30)
def test_a_4_mib_message_each_way():
    with memory_pair(RpcMethodHandler.unary(lambda r: r[::-1], "reverse")) as pair:
        message = bytes(range(256)) * (16 * 1024)
        assert pair.client.unary("reverse")(message, timeout=20) == message[::-1]


@pytest.mark.timeout(60)
def test_slow_handler_pushes_back_on_client():
    release = threading.Event()
    produced = []

    def slow_reader(requests):
        total = 0
        for i, request in enumerate(requests):
            if i == 0:
                release.wait(20)
            assert len(request) == CHUNK
            total += 1
        return str(total).encode()

    def requests():
        for _ in range(COUNT):
            produced.append(1)
            yield b"x" * CHUNK

    with memory_pair(RpcMethodHandler.client_stream(slow_reader, "slowReader")) as pair, \
            ThreadPoolExecutor(1) as pool:
        future = pool.submit(pair.client.client_stream("slowReader"), requests(), timeout=50)
        time.sleep(1.0)
        sent_while_stalled = len(produced) * CHUNK
        release.set()
        assert future.result(timeout=50) == str(COUNT).encode()
    assert sent_while_stalled < BOUND, f"{sent_while_stalled} bytes went to a stalled handler"


@pytest.mark.timeout(60)
def test_slow_client_pushes_back_on_handler():
    produced = []

    def firehose(request):
        for i in range(COUNT):
            produced.append(1)
            yield i.to_bytes(4, "big") + b"y" * (CHUNK - 4)

    with memory_pair(RpcMethodHandler.server_stream(firehose, "firehose")) as pair:
        replies = pair.client.server_stream("firehose")(b"", timeout=50)
        first = next(replies)
        time.sleep(1.0)
        assert len(produced) * CHUNK < BOUND, "handler not slowed by a client that does not read"
        numbers = [int.from_bytes(m[:4], "big") for m in [first, *replies]]
    assert numbers == list(range(COUNT))


@pytest.mark.timeout(30)
def test_cancel_frees_a_handler_blocked_in_a_send_at_once():
    """A reset mid-send: the handler waits for window; the client's RST_STREAM must
    end that wait (its stream's condition), not a timeout."""
    ended = threading.Event()
    finalized = threading.Event()

    def endless(request, context):
        context.add_callback(ended.set)
        try:
            while True:
                yield b"z" * CHUNK
        finally:
            finalized.set()

    with memory_pair(RpcMethodHandler.server_stream(endless, "endless")) as pair:
        replies = pair.client.server_stream("endless")(b"")
        next(replies)
        (server_connection,) = pair.server_connections()
        assert _wait_until(lambda: bool(server_connection._stream_waits)), \
            "the handler never waited for window"
        started = time.monotonic()
        replies.cancel()
        assert ended.wait(2) and finalized.wait(2)
        assert time.monotonic() - started < 1.0
        assert not server_connection._stream_waits  # the waiter left its entry behind


@pytest.mark.timeout(30)
def test_goaway_lets_the_running_call_finish_and_refuses_new_ones():
    entered = threading.Event()
    release = threading.Event()

    def slow(request):
        entered.set()
        release.wait(10)
        return b"finished:" + request

    with memory_pair(RpcMethodHandler.unary(slow, "slow"),
                     RpcMethodHandler.unary(lambda r: b"quick", "quick")) as pair, \
            ThreadPoolExecutor(2) as pool:
        assert pair.client.unary("quick")(b"", timeout=10) == b"quick"
        in_flight = pool.submit(pair.client.unary("slow"), b"a", timeout=20)
        assert entered.wait(5)
        stopping = pool.submit(pair.server.stop, 5)
        assert _wait_until(lambda: pair.connection.draining), "no GOAWAY reached the client"
        with pytest.raises(dubbo.RpcError) as info:
            pair.client.unary("quick")(b"", timeout=5)
        assert info.value.code is StatusCode.UNAVAILABLE
        assert not stopping.done(), "stop() returned while a call was in flight"
        release.set()
        assert in_flight.result(timeout=10) == b"finished:a"
        stopping.result(timeout=10)
