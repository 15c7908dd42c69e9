"""Who waits for whom in the transport: a WINDOW_UPDATE wakes the sender of the
stream it opens and no other, and a MessageWriter's flush never waits for another
thread's send. Driven from the test thread over a socketpair, no I/O loop running."""

from __future__ import annotations

import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

import dubbo
from dubbo.status import StatusCode
from dubbo.transport import connection as transport_connection
from dubbo.transport.connection import H2Transport
from dubbo.transport.ioloop import IOLoop
from dubbo.transport.messages import COALESCE_DELAY, MessageWriter
from dubbo.transport.timer import Scheduler


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded in time
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


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


class _BlockingTransport:
    """Stands in for H2Transport: its first send waits until released, as a send
    waiting for window does."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.in_send = threading.Event()
        self.sent: list[bytes] = []

    def send_data(self, stream_id, data, end_stream, deadline, stream_error, trailers=None,
                  block=True, send_timeout=None):
        if not self.sent:
            self.in_send.set()
            assert self.release.wait(10)
        self.sent.append(bytes(data) if not isinstance(data, tuple) else b"".join(data))
        return None


@pytest.mark.timeout(30)
def test_flush_never_waits_for_another_threads_blocked_send():
    """A client's caller flushes before it reads; the sender thread may be holding
    the writer's lock in a send that waits for window. The caller must go on to read
    (or the two peers can wait for each other), and what it wanted flushed goes out
    with the armed timer once the send is done."""
    transport = _BlockingTransport()
    scheduler = Scheduler("dubbo-test-timer")
    try:
        writer = MessageWriter(transport, 1, None, lambda: None, scheduler)  # type: ignore[arg-type]
        sender = threading.Thread(target=writer.write, args=(b"first", False),
                                  name="dubbo-test-sender")
        sender.start()
        assert transport.in_send.wait(5)
        # The producer holds the lock now; a message waits meanwhile, timer armed.
        with_lock_held_elsewhere = writer._lock.locked()
        writer._pending.append(b"second")
        writer._size += 6
        writer._armed = True
        scheduler.call_later(COALESCE_DELAY, writer._on_timer)
        started = time.monotonic()
        writer.flush()
        assert time.monotonic() - started < 0.5, "flush waited for another thread's send"
        assert with_lock_held_elsewhere
        transport.release.set()
        sender.join(5)
        assert _wait_until(lambda: transport.sent == [b"first", b"second"]), transport.sent
    finally:
        transport.release.set()
        scheduler.close()


def test_credit_is_not_held_back_for_a_call_abandoned_during_a_feed():
    """The reader decodes a frame while the call ends on another thread: the credit
    must come back, not stay deferred for a consumer that is gone."""
    from dubbo.transport.messages import RECV_HIGH_WATER, Inbox
    from dubbo.wire.framing import MessageDecoder

    inbox = Inbox()
    inbox.buffered = RECV_HIGH_WATER  # the consumer stopped reading

    class EndsTheCallMidway(MessageDecoder):
        def feed(self, data):
            inbox.abandon()  # the handler returned meanwhile (call_done)
            return super().feed(data)

    inbox.decoder = EndsTheCallMidway(None)
    frame = b"\0" + (3).to_bytes(4, "big") + b"abc"
    assert inbox.feed(frame, len(frame)) == len(frame)
    assert inbox.deferred == 0
