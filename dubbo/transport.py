"""One HTTP/2 connection over a blocking socket, shared by the server and the client.

Threading model (the design card):

* one reader thread per connection calls ``recv``, feeds h2 and dispatches events;
* any thread may send. ``lock`` (a Condition) guards the h2 state machine; sends take
  ``_send_lock`` so bytes drained from h2 reach the socket in the order h2 produced
  them, and the h2 lock is never held across a blocking ``sendall``;
* a sender whose flow-control window is closed waits on ``lock``; the reader notifies
  it on WINDOW_UPDATE / SETTINGS, and a reset, cancel or close wakes it too.

Received messages are acknowledged (their window reopened) as the consumer takes them
once a stream has ``RECV_HIGH_WATER`` bytes waiting, so a slow consumer slows its peer
and memory per stream stays bounded (grpclib's Buffer does the same).
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from .deadline import Deadline
from .frames import DEFAULT_MAX_MESSAGE_SIZE, MessageDecoder
from .hpack_cache import CachingDecoder, CachingEncoder
from .status import CancelledError, DeadlineExceededError, RpcError, StatusCode, UnavailableError
from .timer import Scheduler
from .tls import TLSLayer

log = logging.getLogger("dubbo.transport")

# A non-blocking send for the reader and timer threads (Linux and the BSDs have it).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_READER_LOCK_WAIT = 0.001  # seconds a non-blocking flush may wait for the send lock
RECV_SIZE = 256 * 1024  # read into one reused buffer: no 256 KiB allocation per read
STREAM_WINDOW = 8 * 1024 * 1024  # our per-stream receive window: a 4 MiB message flows unstopped
CONNECTION_WINDOW = 16 * 1024 * 1024  # our connection receive window
MAX_FRAME_SIZE = 1024 * 1024  # largest DATA frame we accept
RECV_HIGH_WATER = 1024 * 1024  # unconsumed bytes per stream before we stop reopening
SEND_BATCH = 1024 * 1024  # bytes pushed into h2 per lock hold when sending a large message
ACK_BATCH = 256 * 1024  # received bytes acknowledged to h2 at once
COALESCE_BYTES = 64 * 1024  # a MessageWriter sends once this much waits
COALESCE_DELAY = 0.001  # ... or this long after the first waiting message
# A producer (handler generator, request iterator) that handed over its last message
# this fast is likely to hand over the next one soon: its messages are packed.
FAST_PRODUCER = 50e-6

# What send_data takes: one buffer, or parts sent back to back.
Payload = bytes | memoryview | tuple[bytes | memoryview, ...]

_END = object()  # inbox marker: the peer half-closed the stream
# Events that may let a blocked sender go on (or must stop it).
_WAKE_SENDERS = (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged,
                 h2.events.StreamReset, h2.events.ConnectionTerminated)


class _H2Connection(h2.connection.H2Connection):
    """h2's connection minus one cost: ``_receive_frame`` formats ``repr(frame)`` for
    trace logging on every frame even when logging is off, which hex-dumps DATA
    payloads (35% of the server's CPU echoing 4 MiB messages, 9% on small unary
    calls). Same logic otherwise; h2 is pinned to 4.x in setup.cfg. Its HPACK coders
    remember repeated header blocks (hpack_cache)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        self.encoder = CachingEncoder()
        decoder = CachingDecoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        self.decoder = decoder

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except h2.exceptions.StreamClosedError as exc:
            # Closed by RST_STREAM: answer with RST_STREAM; otherwise a connection error.
            if not self._stream_is_closed_by_reset(exc.stream_id):
                raise
            self._prepare_for_sending([_rst_frame(exc.stream_id, exc.error_code)])
            return exc._events
        except h2.exceptions.StreamIDTooLowError as exc:
            if self._stream_is_closed_by_reset(exc.stream_id):
                self._prepare_for_sending(
                    [_rst_frame(exc.stream_id, h2.errors.ErrorCodes.STREAM_CLOSED)])
                return []
            if self._stream_is_closed_by_end(exc.stream_id):
                raise h2.exceptions.StreamClosedError(exc.stream_id) from exc
            raise
        self._prepare_for_sending(frames)
        return events


def _rst_frame(stream_id: int, error_code: int) -> RstStreamFrame:
    frame = RstStreamFrame(stream_id)
    frame.error_code = error_code
    return frame


class Inbox:
    """Messages received on one stream, in order, until the consumer takes them.

    The reader thread ``feed``s; one consumer thread ``get``s. The messages of one DATA
    frame travel as one queue item (a list), so a frame packed with many messages costs
    one hand-over, not one per message. ``_lock`` guards ``buffered`` and ``deferred``
    (bytes whose flow-control credit we hold back); ``_ready`` belongs to the consumer.
    """

    __slots__ = ("_queue", "_ready", "_lock", "buffered", "deferred", "error", "done",
                 "decoder", "drop_empty", "abandoned")

    def __init__(self, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> None:
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

    def abandon(self) -> int:
        """The call is over: return the credit held back, and from now on give all
        credit back at once (that data still counts against the connection)."""
        with self._lock:
            self.abandoned = True
            credit, self.deferred = self.deferred, 0
        return credit

    def feed(self, data: bytes, flow_controlled: int) -> int:
        """Decode ``data``; return how much credit to give back to the peer now."""
        if self.abandoned:
            return flow_controlled
        messages = self.decoder.feed(data)
        if self.drop_empty:
            messages = [m for m in messages if m]
        size = sum(map(len, messages))
        with self._lock:
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
        return message, credit


class MessageWriter:
    """Sends one stream's messages, packing a fast producer's into shared DATA frames.

    With one message per DATA frame, h2's per-frame work dominates streaming on both
    ends. A message from a producer that handed it over quickly (``coalesce``) waits,
    unsent, for company; what waits goes out when 64 KiB have gathered, when the
    producer is slow or finishes, before a handler blocks on its request iterator
    (``flush``), and at the latest ``COALESCE_DELAY`` after the first one began to
    wait (the scheduler). ``_lock`` guards ``_pending``/``_size``/``_armed`` and keeps
    this stream's sends in order.
    """

    __slots__ = ("transport", "stream_id", "deadline", "error", "scheduler", "urgent",
                 "_lock", "_pending", "_size", "_armed")

    def __init__(self, transport: H2Transport, stream_id: int, deadline: Deadline | None,
                 error: Callable[[], RpcError | None], scheduler: Scheduler,
                 urgent: Callable[[], bool] | None = None) -> None:
        self.transport = transport
        # ``urgent()`` true: someone waits on the peer's answer, nothing may be held.
        self.urgent = urgent
        self.stream_id = stream_id
        self.deadline = deadline
        self.error = error
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._pending: list[Payload] = []
        self._size = 0
        self._armed = False

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def write(self, frame: Payload, coalesce: bool) -> None:
        size = sum(map(len, frame)) if isinstance(frame, tuple) else len(frame)
        with self._lock:
            self._pending.append(frame)
            self._size += size
            if coalesce and self._size < COALESCE_BYTES and not (self.urgent and self.urgent()):
                if not self._armed:
                    self._armed = True
                    self.scheduler.call_later(COALESCE_DELAY, self._on_timer)
                return
            self._send_locked(False, None)

    def flush(self) -> None:
        if self._pending:
            with self._lock:
                if self._pending:
                    self._send_locked(False, None)

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
                                 self.deadline, self.error, trailers)

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
                                                self.deadline, self.error, block=False)
            except RpcError:
                return  # the stream is over
            if rest:  # window shut: keep the rest and look again later
                self._pending, self._size = [rest], sum(map(len, rest))
                self._armed = True
                self.scheduler.call_later(COALESCE_DELAY, self._on_timer)
        finally:
            self._lock.release()


class H2Transport:
    """A socket plus its h2 state machine; subclasses handle the events."""

    thread_name = "dubbo-conn"

    def __init__(self, sock: socket.socket, client_side: bool,
                 max_concurrent_streams: int | None = None,
                 tls: TLSLayer | None = None) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.tls = tls  # its handshake is done before the first flush
        try:
            peer = sock.getpeername()
            family = "ipv6" if sock.family == socket.AF_INET6 else "ipv4"
            self.peer = f"{family}:{peer[0]}:{peer[1]}" if family == "ipv4" \
                else f"ipv6:[{peer[0]}]:{peer[1]}"
        except OSError:
            self.peer = "unknown"
        # We build every header block ourselves (metadata.py validates user metadata)
        # and parse received ones in metadata.py, which checks each header it uses and
        # answers bad input with a gRPC status; h2 re-validating and re-normalising
        # every block on both paths cost ~15% of a unary call's CPU.
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        self.conn = _H2Connection(config=config)
        self.lock = threading.Condition()  # guards self.conn and closed/error
        self._send_lock = threading.Lock()  # orders socket writes
        self.closed = False
        self.error: RpcError | None = None
        self.thread: threading.Thread | None = None
        self.last_activity = time.monotonic()  # when bytes last arrived: liveness
        self._unsent = b""  # bytes a non-blocking flush could not write (under _send_lock)
        self._flush_wanted = False  # a non-blocking flush found the send lock taken
        # Credit owed to the peer, not yet handed to h2: the reader thread's alone.
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0
        self._keep_open_after_goaway()
        # Our settings go in the preface's SETTINGS frame and are in force at once:
        # accepting more than we advertised before the peer's ACK is harmless, and h2
        # refreshes its frame-size limit only per receive_data() call, so a later
        # update_settings() races an ACK and a large frame arriving in one read.
        settings = {
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 64 * 1024,
        }
        if max_concurrent_streams is not None:
            settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
        self.conn.local_settings = h2.settings.Settings(client=client_side,
                                                        initial_values=settings)
        self.conn.max_inbound_frame_size = MAX_FRAME_SIZE
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)

    # -- threads -------------------------------------------------------------------

    def start(self, handshake_timeout: float | None = None) -> None:
        """Start the reader thread; with ``handshake_timeout`` it first runs the TLS
        handshake (servers: a slow client must not hold up the accept loop)."""
        self.thread = threading.Thread(target=self._run, args=(handshake_timeout,),
                                       name=self.thread_name, daemon=True)
        self.thread.start()

    def _run(self, handshake_timeout: float | None) -> None:
        if self.tls is not None and handshake_timeout is not None:
            try:
                self.tls.handshake(self.sock, handshake_timeout)
            except (OSError, ssl.SSLError) as exc:
                log.warning("TLS handshake with %s failed: %s", self.peer, exc)
                self._terminate(UnavailableError(StatusCode.UNAVAILABLE,
                                                 f"TLS handshake failed: {exc}"))
                return
        try:
            self.flush()  # the connection preface
        except RpcError as exc:
            self._terminate(exc)
            return
        self._read_loop()

    def _read_loop(self) -> None:
        error: RpcError = UnavailableError(StatusCode.UNAVAILABLE, "connection closed by peer")
        try:
            recv_into = self.sock.recv_into
            buffer = bytearray(RECV_SIZE)
            view = memoryview(buffer)
            while True:
                n = recv_into(buffer)
                if not n:
                    break
                self.last_activity = time.monotonic()
                data: bytes | memoryview = view[:n]
                if self.tls is not None:
                    data, tls_output = self.tls.decrypt(data)
                    if tls_output:
                        self.flush(block=False)
                    if not data:
                        continue
                with self.lock:
                    if self.closed:
                        break
                    # h2 copies what it is given, so a view of the reused buffer is safe.
                    events = self.conn.receive_data(data)
                    for event in events:
                        if isinstance(event, _WAKE_SENDERS):
                            self.lock.notify_all()
                            break
                self.handle_events(events)
                # Most reads queue nothing to send (acks are batched); h2's outgoing
                # buffer says so without a lock (a writer that adds to it flushes).
                if self.conn._data_to_send:
                    self.flush(block=False)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from %s: %s", self.peer, exc)
            error = UnavailableError(StatusCode.INTERNAL, f"HTTP/2 protocol error: {exc}")
            try:
                self.flush(block=False)  # h2 queued a GOAWAY for the peer
            except OSError:
                pass
        except OSError as exc:
            if not self.closed:
                error = UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}")
        except RpcError as exc:  # a write failed: close() already recorded why
            error = exc
        except Exception:  # a bug of ours: never die silently and leave calls hanging
            log.exception("connection reader for %s failed", self.peer)
            error = UnavailableError(StatusCode.INTERNAL, "connection reader failed")
        self._terminate(error)

    def _terminate(self, error: RpcError) -> None:
        with self.lock:
            if self.error is None:
                self.error = error
            self.closed = True
            self.lock.notify_all()
        self.connection_lost(self.error or error)
        try:
            self.sock.close()
        except OSError:
            pass

    def close(self, error: RpcError | None = None) -> None:
        """Close the socket; the reader thread ends and fails what is in flight."""
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            self.closed = True
            self.lock.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.thread is None:
            self._terminate(error or CancelledError(StatusCode.CANCELLED, "closed"))

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- GOAWAY and keepalive ------------------------------------------------------

    def _keep_open_after_goaway(self) -> None:
        """h2 treats any GOAWAY, sent or received, as the end of the connection and
        rejects every later frame. gRPC drains instead: streams at or below the
        GOAWAY's last stream id run to completion (PROTOCOL-HTTP2.md "GOAWAY"). So the
        state machine is put back after each GOAWAY; ``draining`` flags of our own
        stop new streams."""
        table = self.conn._frame_dispatch_table
        receive_goaway = table[GoAwayFrame]

        def receive_and_stay_open(frame: GoAwayFrame) -> Any:
            state = self.conn.state_machine.state
            result = receive_goaway(frame)
            self.conn.state_machine.state = state
            return result

        table[GoAwayFrame] = receive_and_stay_open

    def send_goaway(self, last_stream_id: int | None = None,
                    error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Tell the peer to open no more streams; those up to ``last_stream_id`` go on."""
        with self.lock:
            if self.closed:
                return
            state = self.conn.state_machine.state
            self.conn.close_connection(error_code, last_stream_id=last_stream_id)
            self.conn.state_machine.state = state
        try:
            self.flush()
        except RpcError:
            pass

    def start_keepalive(self, scheduler: Scheduler, interval: float, timeout: float,
                        wanted: Callable[[], bool]) -> None:
        """PING after ``interval`` s without incoming bytes (while ``wanted()``); close
        the connection as UNAVAILABLE when nothing arrives within ``timeout`` s."""

        def tick() -> None:
            if self.closed:
                return
            idle = time.monotonic() - self.last_activity
            if idle < interval or not wanted():
                scheduler.call_later(max(interval - idle, 0.01), tick)
                return
            sent_at = time.monotonic()
            # The timer thread never blocks on the socket: a peer that stopped reading
            # could hold a write forever. The check below closes the socket, which
            # frees that thread.
            threading.Thread(target=self._send_ping, name="dubbo-keepalive", daemon=True).start()
            scheduler.call_later(timeout, lambda: check(sent_at))

        def check(sent_at: float) -> None:
            if self.closed:
                return
            if self.last_activity < sent_at:
                log.warning("no keepalive reply from %s within %.1fs: closing", self.peer,
                            timeout)
                self.close(UnavailableError(StatusCode.UNAVAILABLE,
                                            f"keepalive ping not answered within {timeout}s"))
                return
            tick()

        scheduler.call_later(interval, tick)

    def _send_ping(self) -> None:
        try:
            self.call_h2(self.conn.ping, b"dubbo-ka")
        except (RpcError, h2.exceptions.ProtocolError):
            pass

    # -- sending -------------------------------------------------------------------

    def flush(self, block: bool = True) -> None:
        """Write what h2 has queued, in order. Never holds ``lock`` across a write.

        Threads that produce data (handlers, senders) pass ``block`` and wait for the
        socket. The reader and the timer must never wait on a write, or two peers
        whose readers both wait on full sockets deadlock: with ``block`` false a
        flush leaves its bytes to the thread already writing (which loops until h2
        has nothing left), sends without blocking, and if the socket is full hands
        the rest to a short-lived helper thread.
        """
        # A non-blocking flush may wait a moment for a writer to finish: the reader then
        # gathers more per read (7 % more unary calls/s with 16 callers) and still can
        # never be held by a write that waits on the peer.
        if not self._send_lock.acquire(timeout=-1 if block else _READER_LOCK_WAIT):
            self._flush_wanted = True  # the holder re-checks after its last write
            return
        helper = False
        try:
            while True:
                self._flush_wanted = False
                with self.lock:
                    data = self.conn.data_to_send()
                if self.tls is not None:
                    data = self.tls.encrypt(data)  # under the send lock: records in order
                if self._unsent:
                    data, self._unsent = self._unsent + data, b""
                if not data:
                    break
                if block:
                    self.sock.sendall(data)
                    if not self._flush_wanted:
                        break
                    continue
                try:
                    sent = self.sock.send(data, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                if sent < len(data):
                    self._unsent = data[sent:]
                    helper = True
                    break
        except OSError as exc:
            self.close(UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}"))
            raise self.error or UnavailableError(StatusCode.UNAVAILABLE, str(exc)) from exc
        finally:
            self._send_lock.release()
        if helper:
            threading.Thread(target=self._flush_quietly, name="dubbo-flush",
                             daemon=True).start()
        elif self._flush_wanted:
            self.flush(block=False)  # queued after our last look, by one that gave up

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except RpcError:
            pass

    def call_h2(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one h2 operation under the lock, then flush what it produced."""
        with self.lock:
            self.check_open()
            result = fn(*args, **kwargs)
        self.flush()
        return result

    def check_open(self) -> None:
        if self.closed:
            raise self.error or UnavailableError(StatusCode.UNAVAILABLE, "connection closed")

    def send_data(
        self,
        stream_id: int,
        data: Payload,
        end_stream: bool,
        deadline: Deadline | None,
        stream_error: Callable[[], RpcError | None],
        trailers: list[tuple[str, str]] | None = None,
        block: bool = True,
    ) -> tuple[memoryview, ...] | None:
        """Send ``data`` (bytes, or a tuple of parts sent back to back, which spares
        joining a large message to its prefix) on a stream as flow control allows,
        blocking while it is shut.

        ``stream_error`` reports a reset or cancel of the stream, which ends the wait.
        ``trailers``, when given, follow the data in the same write. With ``block``
        false, a shut window returns the unsent rest instead of waiting.
        """
        parts = [memoryview(p) for p in (data if isinstance(data, tuple) else (data,)) if len(p)]
        index = offset = 0  # position: parts[index][offset:]
        sent, total = 0, sum(map(len, parts))
        while True:
            with self.lock:
                while True:
                    err = stream_error()
                    if err is not None:
                        raise err
                    self.check_open()
                    window = self.conn.local_flow_control_window(stream_id)
                    if window > 0 or sent == total:
                        break
                    if not block:
                        return (parts[index][offset:], *parts[index + 1 :])
                    if deadline is not None:
                        remaining = deadline.remaining()
                        if remaining <= 0:
                            raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                                        "Deadline Exceeded")
                        self.lock.wait(remaining)
                    else:
                        self.lock.wait()
                frame_size = self.conn.max_outbound_frame_size
                budget = min(window, SEND_BATCH)
                while sent < total and budget > 0:
                    part = parts[index]
                    size = min(frame_size, budget, len(part) - offset)
                    last = sent + size == total
                    self.conn.send_data(stream_id, part[offset : offset + size],
                                        end_stream=end_stream and last and trailers is None)
                    offset += size
                    sent += size
                    budget -= size
                    if offset == len(part):
                        index, offset = index + 1, 0
                if sent == total:
                    if total == 0 and (end_stream and trailers is None):
                        self.conn.send_data(stream_id, b"", end_stream=True)
                    if trailers is not None:
                        self.conn.send_headers(stream_id, trailers, end_stream=True)
            self.flush(block)
            if sent == total:
                return None

    def acknowledge(self, stream_id: int, credit: int) -> None:
        """Give ``credit`` bytes of receive window back to the peer."""
        if credit:
            with self.lock:
                if self.closed:
                    return
                self.conn.acknowledge_received_data(credit, stream_id)
            self.flush()

    def reset_stream(self, stream_id: int, error_code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """Send RST_STREAM unless the stream is already closed on both sides."""
        with self.lock:
            if self.closed:
                return
            try:
                self.conn.reset_stream(stream_id, error_code)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return
            self.lock.notify_all()
        try:
            # Non-blocking: resets come from the reader, the timer and __del__ (which
            # may run inside a flush on this very thread).
            self.flush(block=False)
        except RpcError:
            pass

    # -- events (subclasses) -------------------------------------------------------

    def receive_data(self, event: h2.events.DataReceived, inbox: Inbox | None = None,
                     on_error: Callable[[RpcError], None] | None = None) -> None:
        """Feed a DATA event to its stream's inbox and give back what credit is due.

        Data for a stream we already let go of still counts against the connection
        window, so it is acknowledged at once (grpc-go stalls otherwise).
        """
        if inbox is None:
            credit = event.flow_controlled_length
        else:
            try:
                credit = inbox.feed(event.data, event.flow_controlled_length)
            except RpcError as exc:  # bad framing, oversize message, bad compression
                if on_error is not None:
                    on_error(exc)
                credit = event.flow_controlled_length + inbox.abandon()
        if credit:
            # Credit is handed to h2 in batches: h2 sends WINDOW_UPDATE only once half
            # a window is used anyway, and our windows (8 MiB per stream, 16 MiB per
            # connection) dwarf the batch.
            self._unacked[event.stream_id] = self._unacked.get(event.stream_id, 0) + credit
            self._unacked_total += credit
            if self._unacked_total >= ACK_BATCH:
                self._acknowledge_batch()

    def _acknowledge_batch(self) -> None:
        with self.lock:
            if not self.closed:
                for stream_id, credit in self._unacked.items():
                    self.conn.acknowledge_received_data(credit, stream_id)
        self._unacked.clear()
        self._unacked_total = 0

    def handle_events(self, events: list[h2.events.Event]) -> None:  # pragma: no cover
        raise NotImplementedError

    def connection_lost(self, error: RpcError) -> None:  # pragma: no cover
        raise NotImplementedError
