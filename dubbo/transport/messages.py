"""The messages of one stream, above the connection: ``Inbox`` queues what the peer sent
until the consumer takes it; ``MessageWriter`` packs what a producer sends.

Neither touches h2 or the socket: an ``Inbox`` is fed by the connection's loop thread,
and a ``MessageWriter`` hands its bytes to ``H2Transport.send_data``.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..status import DeadlineExceededError, RpcError, StatusCode
from ..wire.deadline import Deadline
from ..wire.framing import DEFAULT_MAX_MESSAGE_SIZE, MessageDecoder, check_size
from .connection import H2Transport, Payload
from .heap import HEAP_HINT_MIN
from .timer import Scheduler

RECV_HIGH_WATER = 1024 * 1024  # unconsumed bytes per stream before we stop reopening
LARGE_MESSAGE = HEAP_HINT_MIN  # messages from this size on are told to ``Inbox.on_large``
COALESCE_BYTES = 64 * 1024  # a MessageWriter sends once this much waits
COALESCE_DELAY = 0.001  # ... or this long after the first waiting message
# A producer (handler generator, request iterator) that handed over its last message
# this fast is likely to hand over the next one soon: its messages are packed.
FAST_PRODUCER = 50e-6
_END = object()  # inbox marker: the peer half-closed the stream


class _Compressed(bytes):
    """A message as received, still compressed (inflated by ``Inbox.get``)."""

    __slots__ = ()


class Inbox:
    """Messages received on one stream, in order, until the consumer takes them.

    The reader thread ``feed``s; one consumer thread ``get``s. The messages of one DATA
    frame travel as one queue item (a list), so a frame packed with many messages costs
    one hand-over, not one per message. ``_lock`` guards ``buffered``, ``deferred``
    (bytes whose flow-control credit we hold back) and ``abandoned``; it is never held
    while another lock is taken. ``_ready``, ``done`` and the decompressor belong to
    the consumer, ``decoder`` to the reader.
    """

    __slots__ = ("_queue", "_ready", "_lock", "buffered", "deferred", "error", "done",
                 "decoder", "drop_empty", "abandoned", "_inflate", "on_bad_message",
                 "on_large")

    def __init__(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 on_large: Callable[[int], object] | None = None) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready: collections.deque[bytes] = collections.deque()
        self._lock = threading.Lock()
        self.buffered = 0
        self.deferred = 0
        self.error: RpcError | None = None
        self.done = False  # the consumer has seen the end (or an error)
        self.decoder = MessageDecoder(max_message_size)
        self.drop_empty = False
        self.abandoned = False  # nobody will read again: take no more, hold no credit
        self._inflate: Callable[[bytes], bytes] | None = None
        # Told (on the consumer's thread) when a message cannot be inflated; what it
        # returns is ignored (ClientCall.cancel returns a bool).
        self.on_bad_message: Callable[[RpcError], object] | None = None
        # Told (on the reader's thread) the size of what one feed completed when that is
        # LARGE_MESSAGE or more (keep_heap_for, dubbo/transport/heap.py).
        self.on_large = on_large

    def set_decompressor(self, inflate: Callable[[bytes], bytes]) -> None:
        """Compressed messages are queued as they came and inflated by ``get``, on the
        consumer's thread: what a stream holds counts compressed bytes, bounded by
        flow control, and nothing is inflated for a consumer that does not read."""
        self._inflate = inflate
        self.decoder.decompress = _Compressed

    def abandon(self) -> int:
        """The call is over: return the credit held back, and from now on give all
        credit back at once (that data still counts against the connection)."""
        with self._lock:
            self.abandoned = True
            credit, self.deferred = self.deferred, 0
        return credit

    def feed(self, data: bytes, flow_controlled: int) -> int:
        """Decode ``data``; return how much credit to give back to the peer now."""
        if self.abandoned:  # unlocked: the fast way out; looked at again below
            return flow_controlled
        messages = self.decoder.feed(data)
        if self.drop_empty:
            messages = [m for m in messages if m]
        size = len(messages[0]) if len(messages) == 1 else sum(map(len, messages))
        if size >= LARGE_MESSAGE and self.on_large is not None:
            self.on_large(size)
        with self._lock:
            if self.abandoned:
                # Abandoned since the look above (the call ended on another thread):
                # credit held back now would never be returned.
                return flow_controlled
            if self.buffered >= RECV_HIGH_WATER:
                self.deferred += flow_controlled
                ack = 0
            else:
                ack = flow_controlled
            if messages:
                self.buffered += size
                self._queue.put(messages)
        return ack

    def end(self) -> None:
        self._queue.put(_END)

    def fail(self, error: RpcError) -> None:
        """Wake the consumer with ``error`` at once, ahead of queued messages."""
        # No lock: two threads failing at once (a reset read and the deadline) may
        # both store, and either error is right; the queue item published after it
        # is what the consumer synchronises on.
        if self.error is None:
            self.error = error
        self._queue.put(_END)

    def ready(self) -> bool:
        """True when ``get`` would not block (consumer thread only)."""
        return bool(self._ready) or not self._queue.empty()

    def get(self, deadline: Deadline | None) -> tuple[bytes | None, int]:
        """The next message (``None`` at the end) and the credit to give back.

        Raises the stream's error (cancel, reset) or DEADLINE_EXCEEDED.
        """
        if self.error is not None:
            self.done = True
            raise self.error
        if self._ready:
            message = self._ready.popleft()
        elif self.done:
            return None, 0
        else:
            try:
                if deadline is None:
                    item = self._queue.get()
                else:
                    item = self._queue.get(timeout=deadline.remaining())
            except queue.Empty:
                raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                            "Deadline Exceeded") from None
            if self.error is not None:
                self.done = True
                raise self.error
            if item is _END:
                self.done = True
                return None, 0
            message = item[0]
            if len(item) > 1:
                self._ready.extend(item[1:])
        with self._lock:
            self.buffered -= len(message)
            credit = 0
            if self.deferred and self.buffered < RECV_HIGH_WATER:
                credit, self.deferred = self.deferred, 0
        if type(message) is _Compressed:
            message = self._inflated(message)
        return message, credit

    def _inflated(self, message: bytes) -> bytes:
        assert self._inflate is not None
        try:
            payload = self._inflate(message)
            check_size(len(payload), self.decoder.max_message_size, "Received decompressed")
        except RpcError as exc:
            self.fail(exc)
            self.done = True
            if self.on_bad_message is not None:
                self.on_bad_message(exc)
            raise
        return payload


class MessageWriter:
    """Sends one stream's messages, packing a fast producer's into shared DATA frames.

    With one message per DATA frame, h2's per-frame work dominates streaming on both
    ends. A message from a producer that handed it over quickly (``coalesce``) waits,
    unsent, for company; what waits goes out when 64 KiB have gathered, when the
    producer is slow or finishes, before a handler blocks on its request iterator
    (``flush``), and at the latest ``COALESCE_DELAY`` after the first one began to
    wait (the scheduler). ``_lock`` guards ``_pending``/``_size``/``_armed`` and keeps
    this stream's sends in order.

    ``_lock`` is held across ``send_data``, which may wait for window or backlog
    (bounded by the deadline, a cancel and ``send_timeout``): sends of one stream
    must reach h2 in order. No other thread is held by that wait: only the producer
    (the handler, or a client's sender thread) takes the lock waiting, in ``write``
    and ``close``; ``flush`` (which a client's caller runs before it reads) waits for
    it at most ``COALESCE_DELAY`` and the scheduler's ``_on_timer`` only tries it;
    both give up if it is held longer. That is safe
    because something pending always has the timer armed (``write`` arms it before
    leaving a message, ``_on_timer`` re-arms it for what the window did not take),
    and a sender holding the lock has already taken what was pending. The lock is
    taken before the transport's (``_send_lock``, ``lock``), never after.
    """

    __slots__ = ("transport", "stream_id", "deadline", "get_error", "scheduler", "urgent",
                 "send_timeout", "_lock", "_pending", "_size", "_armed")

    def __init__(self, transport: H2Transport, stream_id: int, deadline: Deadline | None,
                 get_error: Callable[[], RpcError | None], scheduler: Scheduler,
                 urgent: Callable[[], bool] | None = None,
                 send_timeout: float | None = None) -> None:
        self.transport = transport
        self.send_timeout = send_timeout
        # ``urgent()`` true: someone waits on the peer's answer, nothing may be held.
        self.urgent = urgent
        self.stream_id = stream_id
        self.deadline = deadline
        self.get_error = get_error  # why the stream can carry no more, if it can't
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._pending: list[Payload] = []
        self._size = 0
        self._armed = False

    @property
    def pending(self) -> bool:
        """Read without the lock (a stale answer costs at most ``COALESCE_DELAY``:
        what waits has the timer armed)."""
        return bool(self._pending)

    def write(self, frame: Payload, coalesce: bool) -> None:
        with self._lock:
            if not coalesce and not self._pending:
                # A ping-pong's case: nothing waits and this goes at once, as is.
                self.transport.send_data(self.stream_id, frame, False, self.deadline,
                                         self.get_error, send_timeout=self.send_timeout)
                return
            # payload_size(frame), inline: this runs per message of a stream.
            size = sum(map(len, frame)) if isinstance(frame, tuple) else len(frame)
            self._pending.append(frame)
            self._size += size
            if coalesce and self._size < COALESCE_BYTES and not (self.urgent and self.urgent()):
                if not self._armed:
                    self._armed = True
                    self.scheduler.call_later(COALESCE_DELAY, self._on_timer)
                return
            self._send_locked(False, None)

    def flush(self) -> None:
        """Send what waits now. Waits for the lock at most ``COALESCE_DELAY``: a
        producer only adding a message lets go within microseconds (and a ping-pong
        caller must not leave its request to the timer), while one holding it across
        a send that waits for window is left to it: what waits has the timer armed."""
        if self._pending and self._lock.acquire(timeout=COALESCE_DELAY):
            try:
                if self._pending:
                    self._send_locked(False, None)
            finally:
                self._lock.release()

    def close(self, end_stream: bool = True,
              trailers: list[tuple[str, str]] | None = None) -> None:
        """Send what waits, then END_STREAM or ``trailers``, in one write."""
        with self._lock:
            self._send_locked(end_stream, trailers)

    def _take_locked(self) -> Payload:
        """What waits, as one payload: small messages joined (they share DATA frames),
        a large one left in its parts (joining would copy it)."""
        pending, size = self._pending, self._size
        self._pending, self._size = [], 0
        if len(pending) == 1:
            return pending[0]
        parts: list[bytes | memoryview] = []
        for item in pending:
            parts.extend(item) if isinstance(item, tuple) else parts.append(item)
        return b"".join(parts) if size < COALESCE_BYTES * 4 else tuple(parts)

    def _send_locked(self, end_stream: bool, trailers: list[tuple[str, str]] | None) -> None:
        self.transport.send_data(self.stream_id, self._take_locked(), end_stream,
                                 self.deadline, self.get_error, trailers,
                                 send_timeout=self.send_timeout)

    def _on_timer(self) -> None:
        # Scheduler thread: never wait here.
        if not self._lock.acquire(blocking=False):
            # The producer holds the lock; if it only added a message it saw the timer
            # armed and left: look again shortly rather than strand what waits.
            self.scheduler.call_later(COALESCE_DELAY, self._on_timer)
            return
        try:
            self._armed = False
            if not self._pending:
                return
            try:
                rest = self.transport.send_data(self.stream_id, self._take_locked(), False,
                                                self.deadline, self.get_error, block=False)
            except RpcError:
                return  # the stream is over
            if rest:  # window shut: keep the rest and look again later
                self._pending, self._size = [rest], sum(map(len, rest))
                self._armed = True
                self.scheduler.call_later(COALESCE_DELAY, self._on_timer)
        finally:
            self._lock.release()
