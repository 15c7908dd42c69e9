"""Protocol-level behaviour over an in-memory connection pair (tests/memory_pair.py):
a dubbo server and client over ``socket.socketpair()``, no TCP. Ported from the
real-socket tests (test_flow_control.py, test_call_semantics.py), which stay as they
are; these run the same protocol paths without a port, and add what only a
transport-level view can check: that a WINDOW_UPDATE wakes the stream it opens and
no other."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from memory_pair import memory_pair

import dubbo
from dubbo.proxy.handlers import RpcMethodHandler
from dubbo.status import StatusCode
from dubbo.transport import connection as transport_connection
from dubbo.transport.connection import H2Transport
from dubbo.transport.ioloop import IOLoop

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


# -- the transport alone: which waiters a frame wakes ----------------------------------


class _Transport(H2Transport):
    """A bare client-side transport; a reset fails its stream's sender, as the call
    layers do (``ClientCall.cancel``, ``ServerCall.cancel``)."""

    reset: set[int]

    def handle_events(self, events):
        for event in events:
            if isinstance(event, h2.events.StreamReset):
                self.reset.add(event.stream_id)
                self.wake_stream(event.stream_id)

    def stream_error(self, stream_id: int):
        if stream_id in self.reset:
            return dubbo.RpcError(StatusCode.CANCELLED, "reset")
        return None

    def connection_lost(self, error):
        pass


class _CountingCondition(threading.Condition):
    def __init__(self, lock):
        super().__init__(lock)
        self.wakes = 0

    def notify_all(self):
        self.wakes += 1
        super().notify_all()


@pytest.mark.timeout(30)
def test_a_window_update_wakes_only_the_stream_it_opens(monkeypatch):
    """Two senders wait on shut windows; a WINDOW_UPDATE for one stream wakes that
    stream's sender only, a reset of the other wakes and fails that one."""
    conditions: dict[int, _CountingCondition] = {}

    class CountingWait(transport_connection._StreamWait):
        def __init__(self, lock):
            super().__init__(lock)
            self.cond = _CountingCondition(lock)

    monkeypatch.setattr(transport_connection, "_StreamWait", CountingWait)
    ours, theirs = socket.socketpair()
    loop = IOLoop("dubbo-test-loop")  # never started: this test is the reader
    transport = _Transport(ours, client_side=True, loop=loop)
    transport.reset = set()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        peer.initiate_connection()
        peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        transport._receive(peer.data_to_send())
        transport.flush()
        peer.receive_data(theirs.recv(65536))
        with transport.lock:
            for stream_id in (1, 3):
                transport.conn.send_headers(stream_id, [(":method", "POST"), (":path", "/x"),
                                                        (":scheme", "http"),
                                                        (":authority", "x")])
        transport.flush()
        peer.receive_data(theirs.recv(65536))
        transport._receive(peer.data_to_send())  # the SETTINGS ack
        results: dict[int, object] = {}

        def send(stream_id: int) -> None:
            try:
                transport.send_data(stream_id, b"m" * 100, False, None,
                                    lambda: transport.stream_error(stream_id))
                results[stream_id] = "sent"
            except dubbo.RpcError as exc:
                results[stream_id] = exc.code

        threads = [threading.Thread(target=send, args=(i,), name=f"dubbo-test-{i}")
                   for i in (1, 3)]
        for thread in threads:
            thread.start()
        assert _wait_until(lambda: set(transport._stream_waits) == {1, 3})
        for stream_id, wait in transport._stream_waits.items():
            conditions[stream_id] = wait.cond

        peer.increment_flow_control_window(1000, stream_id=1)
        transport._receive(peer.data_to_send())
        threads[0].join(5)
        assert results.get(1) == "sent"
        assert conditions[1].wakes == 1 and conditions[3].wakes == 0

        peer.reset_stream(3, h2.errors.ErrorCodes.CANCEL)
        transport._receive(peer.data_to_send())
        threads[1].join(5)
        assert results.get(3) is StatusCode.CANCELLED
        assert conditions[1].wakes == 1
        assert not transport._stream_waits
    finally:
        transport.close()
        loop.stop()
        theirs.close()
        ours.close()
