"""One HTTP/2 connection over a non-blocking socket, shared by the server and the client.

Threading model (the design card):

* an ``IOLoop`` thread reads the socket, feeds h2 and dispatches events (the server's
  loop reads every connection; a client connection has a loop of its own);
* any thread may send, and no thread ever waits on the socket: ``flush`` sends what
  the socket takes and leaves the rest to the loop (see ``H2Transport``);
* a sender whose flow-control window is closed, or whose connection has
  ``OUTBOUND_HIGH_WATER`` bytes waiting, waits on ``lock`` until a WINDOW_UPDATE,
  SETTINGS, the backlog draining, a reset, a cancel, its deadline or its send timeout.

Received messages are acknowledged (their window reopened) as the consumer takes them
once a stream has ``RECV_HIGH_WATER`` bytes waiting, so a slow consumer slows its peer
and memory per stream stays bounded (grpclib's Buffer does the same). Compressed
messages are inflated by the consumer as it takes them, so what a stream holds is
bounded in compressed bytes and a handler that does not read costs no inflating.

Locks
-----

Every lock of the transport and the layers above it, outermost first: a thread
holding one may take only those below it (the order column), never one above.

===================== ======================================================= =====
lock                  guards                                                  order
===================== ======================================================= =====
``Client._lock``      the client's endpoints, ``_closed``, its timer;         1
                      released before an endpoint or connection is touched
``Server._lock``      connections, running-call count, ``stopping`` writes;   1
                      its condition wakes ``stop()``; never held while a
                      transport lock is taken
``MessageWriter       one stream's packed messages and the order of its       2
._lock``              sends; held across ``send_data`` (which may wait, see
                      messages.py for why that holds no other thread)
``H2Transport         ``_outbuf`` and the order bytes reach the socket (TLS   3
._send_lock``         records too); ``secured`` is read under it
``H2Transport.lock``  (a ``ConnectionLock``, an RLock) the h2 state machine,  4
                      ``closed``/``error``/``_terminated``, ``_h2_pending``,
                      the waiting-stream table; above: the call tables
                      (``calls``), call state (``ServerCall``'s flags,
                      ``ClientCall.status``/``local_error``), ``draining``,
                      ``connected``. Waiters: senders on their stream's
                      condition (same lock), stream-slot waiters and
                      ``join`` on the lock's own condition
``Endpoint._lock``    one provider's current connection, backoff, ``active``  5
                      (``open_stream`` counts a call in under ``lock``). One
                      exception: ``Endpoint.connection`` builds a
                      ``ClientConnection`` under it, whose constructor takes
                      that connection's ``lock``; no other thread can reach
                      the connection yet, so no cycle
``TLSLayer._lock``    the SSLObject and its BIOs (under ``_send_lock`` when   leaf
                      encrypting, alone when reading)
``IOLoop._lock``      the loop's pending callbacks, ``_closed`` (taken under  leaf
                      ``_send_lock`` by ``call_soon``)
``Scheduler._cond``   the timer heap (taken under ``MessageWriter._lock``;    leaf
                      callbacks run outside it)
``Inbox._lock``       ``buffered``/``deferred``/``abandoned``; never nested   leaf
``WorkerPool._lock``  its workers and queue; tasks run outside it             leaf
===================== ======================================================= =====

A stream's sender waits on its own condition (``_StreamWait``): a WINDOW_UPDATE or
RST_STREAM wakes the stream it names; a connection WINDOW_UPDATE or the backlog
draining wakes every waiting stream; SETTINGS, GOAWAY, a protocol error and closing
wake everyone (``lock.notify_all()``, which the call layers also use on a cancel;
``wake_stream`` wakes one stream).

State read without a lock, and why that is safe (CPython stores an attribute in
one step, so a reader sees the old or the new value):

* ``closed``: written under ``lock``, only ever False → True; an unlocked read is a
  shortcut, and every step that matters (``check_open``, ``send_data``) looks again
  under ``lock``.
* ``last_activity``: one writer (the loop); the keepalive timer reading a stale
  time pings a little early or late.
* ``_want_write``: written under ``_send_lock``; ``_sync_write_interest`` on the loop
  applies whatever value is current, and each change schedules another sync.
* ``conn.has_output()`` and ``_outbuf`` peeked by the reader after a read: a thread
  that puts bytes into h2 flushes them itself, so a stale "nothing" skips only a
  flush someone else does; a stale "something" costs one empty flush.
* ``backlog()`` reads ``len(_outbuf)`` without ``_send_lock``: approximate by design.
* ``_unacked``/``_unacked_total``, ``_flood``: the reader's alone.
* ``MessageWriter.pending``, ``ClientCall.reading``, ``ServerConnection.ready``,
  ``Server.stopping``: one writer each, stale reads are benign (commented where
  they are declared).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import h2.config
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ..status import (
    CancelledError,
    DeadlineExceededError,
    ProtocolError,
    RpcError,
    SendStalledError,
    StatusCode,
    UnavailableError,
)
from ..wire.deadline import Deadline
from ..wire.limits import FloodGuard, FloodLimits
from .h2_internals import Connection, OutputPart
from .hpack_first import FirstBlocksDecoder, FirstBlocksEncoder
from .ioloop import IOLoop
from .timer import Scheduler, TimerHandle
from .tls import TLSLayer

if TYPE_CHECKING:
    from .messages import Inbox

log = logging.getLogger("dubbo.transport")

STREAM_WINDOW = 8 * 1024 * 1024  # our per-stream receive window: a 4 MiB message flows unstopped
CONNECTION_WINDOW = 16 * 1024 * 1024  # our connection receive window
MAX_FRAME_SIZE = 1024 * 1024  # largest DATA frame we accept
SEND_BATCH = 1024 * 1024  # bytes pushed into h2 per lock hold when sending a large message
ACK_BATCH = 256 * 1024  # received bytes acknowledged to h2 at once
INLINE_DATA_MAX = 16 * 1024  # a request body push_first_data may queue with its HEADERS
# Unsent bytes per connection above which DATA senders wait, and below which they go on.
OUTBOUND_HIGH_WATER = 2 * 1024 * 1024
OUTBOUND_LOW_WATER = 512 * 1024
DEFAULT_MAX_SEND_BUFFER = 8 * 1024 * 1024  # past it a peer that does not read is dropped
DEFAULT_MAX_HEADER_LIST_SIZE = 64 * 1024

_DEFAULT_FLOOD_LIMITS = FloodLimits()  # frozen: one for every connection given none

# What send_data takes: one buffer, or parts sent back to back.
Payload = bytes | memoryview | tuple[bytes | memoryview, ...]


def payload_size(payload: Payload) -> int:
    return sum(map(len, payload)) if isinstance(payload, tuple) else len(payload)

# Events that may let a blocked sender go on (or must stop it): a WINDOW_UPDATE or a
# reset concerns its stream (a WINDOW_UPDATE on stream 0 every stream); SETTINGS and
# GOAWAY concern every waiter, stream slots too.
_WAKE_STREAM = (h2.events.WindowUpdated, h2.events.StreamReset)
_WAKE_ALL = (h2.events.RemoteSettingsChanged, h2.events.ConnectionTerminated)
# Events a peer can provoke for free, by the FloodGuard bucket that counts them.
_FLOOD_KINDS: dict[type, str] = {
    h2.events.StreamReset: "resets",
    h2.events.PingReceived: "pings",
    h2.events.RemoteSettingsChanged: "settings",
    h2.events.DataReceived: "empty_frames",  # counted only when empty, see _check_flood
    h2.events.PriorityUpdated: "empty_frames",
}


def new_h2_connection(config: h2.config.H2Configuration, max_header_list_size: int,
                      max_concurrent_streams: int | None = None) -> Connection:
    """An h2 connection with our settings in force from the preface on, our HPACK
    coders (hpack_cache) and a frame buffer that bounds what a peer makes us buffer
    (h2_internals holds what this takes of h2's private parts)."""
    settings = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: max_header_list_size,
    }
    if max_concurrent_streams is not None:
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
    # A new connection's first header blocks are coded once per process (hpack_first).
    return Connection(config, settings, FirstBlocksEncoder(),
                      FirstBlocksDecoder(max_header_list_size),
                      max_header_block=max_header_list_size)


# Fresh h2 connections to clone, by (client side, max header list size, max concurrent
# streams): a server or a client has one or two (bounded all the same, see _template).
_templates: dict[tuple[bool, int, int | None], Connection] = {}
_MAX_TEMPLATES = 32


def _template(client_side: bool, max_header_list_size: int,
              max_concurrent_streams: int | None) -> Connection:
    """A connection built, its preface and window increment queued, never used: what
    ``Connection.clone`` copies for each new connection."""
    key = (client_side, max_header_list_size, max_concurrent_streams)
    template = _templates.get(key)
    if template is None:
        # We build every header block ourselves (metadata.py validates user metadata)
        # and parse received ones in metadata.py, which checks each header it uses and
        # answers bad input with a gRPC status; h2 re-validating and re-normalising
        # every block on both paths cost ~15% of a unary call's CPU.
        config = h2.config.H2Configuration(
            client_side=client_side, header_encoding=None,
            validate_outbound_headers=False, normalize_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False)
        template = new_h2_connection(config, max_header_list_size, max_concurrent_streams)
        template.initiate_connection()
        template.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        if len(_templates) >= _MAX_TEMPLATES:
            _templates.clear()
        _templates[key] = template
    return template


class _StreamWait:
    """The condition the senders of one stream wait on, on the transport's lock, and
    how many wait (the entry goes when the last one leaves)."""

    __slots__ = ("cond", "count")

    def __init__(self, lock: threading.RLock) -> None:
        self.cond = threading.Condition(lock)
        self.count = 0


class ConnectionLock(threading.Condition):
    """The transport's lock. As a condition, its own waiters are the threads waiting
    for a stream slot (``ClientConnection.open_stream``) or for the end (``join``);
    senders waiting for flow-control window or backlog wait on a condition of their
    stream (``_StreamWait``) on the same lock, so a WINDOW_UPDATE wakes only the
    stream it opens. ``notify_all()`` still wakes everyone: what a caller that does
    not say which stream it concerns (a cancel, the connection closing) needs."""

    def __init__(self, lock: threading.RLock, streams: dict[int, _StreamWait]) -> None:
        super().__init__(lock)
        self._streams = streams

    def notify_all(self) -> None:
        super().notify_all()
        for wait in self._streams.values():
            wait.cond.notify_all()

    def notify_slot_waiters(self) -> None:
        """Wake only the threads waiting on this condition itself (stream slots, join)."""
        super().notify_all()


def peer_name(family: int, address: tuple[Any, ...]) -> str:
    """grpcio's form of a peer address: ``ipv4:1.2.3.4:80``, ``ipv6:[::1]:80``."""
    if family == socket.AF_INET6:
        return f"ipv6:[{address[0]}]:{address[1]}"
    return f"ipv4:{address[0]}:{address[1]}"


class H2Transport:
    """A non-blocking socket plus its h2 state machine, driven by an ``IOLoop``;
    subclasses handle the events.

    Nothing here ever waits on the socket. Bytes h2 produces go out with a
    non-blocking send; what the socket does not take waits in ``_outbuf`` for the
    loop to write when the socket is writable. Threads that produce DATA stop pushing
    into h2 while ``OUTBOUND_HIGH_WATER`` bytes wait, so what we hold for a peer that
    does not read is bounded; if control frames it provokes (PING and SETTINGS acks,
    resets) still pile up past ``max_send_buffer``, the connection is closed.

    Locks: ``_send_lock`` then ``lock``, never the other way; the module docstring
    has the table of every lock and the state each guards.
    """

    def __init__(self, sock: socket.socket, client_side: bool, loop: IOLoop,
                 max_concurrent_streams: int | None = None,
                 tls: TLSLayer | None = None,
                 max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE,
                 max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
                 flood_limits: FloodLimits | None = None) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # not a socketpair (AF_UNIX)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.loop = loop
        self.tls = tls
        # False until the TLS handshake is done: h2's output waits in h2 till then.
        self.secured = tls is None
        try:
            self.peer = peer_name(sock.family, sock.getpeername())
        except (OSError, IndexError, TypeError):
            self.peer = "unknown"  # not connected yet (a client sets it itself)
        # Copied from a template (h2's set-up, our preface and window increment done),
        # with HPACK coders of its own that start from the process's first blocks.
        self.conn = _template(client_side, max_header_list_size, max_concurrent_streams
                              ).clone(FirstBlocksEncoder(),
                                      FirstBlocksDecoder(max_header_list_size))
        mutex = self.lock_mutex = threading.RLock()  # the lock under ``lock``
        # Senders waiting for window or backlog, by stream (lock): see ConnectionLock.
        self._stream_waits: dict[int, _StreamWait] = {}
        self._backlog_waiters = 0  # of them, those waiting for the backlog (lock)
        self.lock = ConnectionLock(mutex, self._stream_waits)  # see the class docstring
        self._send_lock = threading.Lock()
        self.closed = False
        self.error: RpcError | None = None
        self.last_activity = time.monotonic()  # when bytes last arrived: liveness
        self.max_send_buffer = max_send_buffer
        self._outbuf = bytearray()  # bytes the socket did not take yet (_send_lock)
        self._h2_pending = 0  # DATA bytes pushed into h2, not yet flushed (lock)
        self._want_write = False  # the loop watches for writability (loop thread)
        self._terminated = False  # connection_lost ran and the socket is closed (lock)
        self._keepalive_timer: TimerHandle | None = None
        self._flood = FloodGuard(flood_limits or _DEFAULT_FLOOD_LIMITS, time.monotonic())
        # Credit owed to the peer, not yet handed to h2: the reader's alone.
        self._unacked: dict[int, int] = {}
        self._unacked_total = 0

    # -- the loop ------------------------------------------------------------------

    def join_loop(self) -> None:
        """Register with the loop and start talking: on the loop thread, or before the
        loop thread runs."""
        if self.closed:
            self._terminate(self.error or UnavailableError(StatusCode.UNAVAILABLE, "closed"))
            return
        try:
            # A connect in progress is done when the socket turns writable.
            self._want_write = self.wants_connect()
            self.loop.register(self, write=self._want_write)
        except (OSError, ValueError, KeyError) as exc:
            self._terminate(UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}"))
            return
        self.attached()

    def wants_connect(self) -> bool:
        """True while a non-blocking connect is in progress (clients)."""
        return False

    def attached(self) -> None:
        """On the loop thread, once registered: start talking."""
        if self.tls is not None and not self.tls.server_side:
            self._handshake(b"")
        else:
            self._flush_from_loop()

    def on_ready(self, readable: bool, writable: bool) -> None:
        if writable:
            self._on_writable()
        if readable and not self.closed:
            self._on_readable()

    def _on_writable(self) -> None:
        self._flush_from_loop()

    def _flush_from_loop(self) -> None:
        try:
            self.flush()
        except RpcError:
            pass

    def _on_readable(self) -> None:
        # The rest of a large DATA payload is read straight into its own buffer: no
        # copy through the loop's buffer and h2's frame buffer (plain TCP only).
        target = self.conn.body_target() if self.tls is None else None
        try:
            n = self.sock.recv_into(self.loop.buffer if target is None else target)
            if target is not None:
                target.release()  # h2's buffer is trimmed to the payload once complete
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._terminate(UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}"))
            return
        if not n:
            self._terminate(UnavailableError(StatusCode.UNAVAILABLE,
                                             "connection closed by peer"))
            return
        self.last_activity = time.monotonic()
        data: bytes | memoryview | int = self.loop.view[:n] if target is None else n
        try:
            if self.tls is not None:
                assert not isinstance(data, int)
                if not self.secured:
                    data = self._handshake(bytes(data))
                else:
                    data, tls_output = self.tls.decrypt(data)
                    if tls_output:
                        self.flush()
                if not data or self.closed:
                    return
            self._receive(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from %s: %s", self.peer, exc)
            try:
                self.flush()  # h2 queued a GOAWAY for the peer
            except RpcError:
                pass
            self._terminate(ProtocolError(StatusCode.INTERNAL, f"HTTP/2 protocol error: {exc}"))
        except RpcError as exc:  # a write failed: close() already recorded why
            self._terminate(exc)
        except Exception:  # a bug of ours: never die silently and leave calls hanging
            log.exception("connection reader for %s failed", self.peer)
            self._terminate(RpcError(StatusCode.INTERNAL, "connection reader failed"))

    def _receive(self, data: bytes | memoryview | int) -> None:
        """Hand h2 what was read: bytes, or (an int) how many were read into
        ``conn.body_target()``."""
        with self.lock:
            if self.closed:
                return
            try:
                # h2 copies what it is given, so a view of the reused buffer is safe.
                events = (self.conn.receive_into_body(data) if type(data) is int
                          else self.conn.receive_data(data))
            except h2.exceptions.ProtocolError as exc:
                # h2 is closed now: no sender may reach it before _terminate runs.
                self.closed = True
                if self.error is None:
                    self.error = ProtocolError(StatusCode.INTERNAL,
                                               f"HTTP/2 protocol error: {exc}")
                self.lock.notify_all()
                raise
            if self._stream_waits:
                self._wake_for(events)
            else:  # no sender waits: only stream-slot waiters may care
                for event in events:
                    if isinstance(event, _WAKE_ALL):
                        self.lock.notify_slot_waiters()
                        break
        flood = self._check_flood(events)
        if flood is not None:
            self.calm_down(flood)
            return
        self.handle_events(events)
        # Most reads queue nothing to send (acks are batched); h2's outgoing buffer
        # says so without a lock (a writer that adds to it flushes).
        if self.conn.has_output() or self._outbuf:
            self.flush()

    def _wake_for(self, events: list[h2.events.Event]) -> None:
        """Wake the waiters the events concern (lock held)."""
        for event in events:
            if isinstance(event, _WAKE_STREAM):
                if event.stream_id:
                    self._wake_stream_locked(event.stream_id)
                else:  # the connection's window
                    self._wake_streams_locked()
            elif isinstance(event, _WAKE_ALL):
                self.lock.notify_all()
                return

    def _wake_stream_locked(self, stream_id: int) -> None:
        wait = self._stream_waits.get(stream_id)
        if wait is not None:
            wait.cond.notify_all()

    def _wake_streams_locked(self) -> None:
        for wait in self._stream_waits.values():
            wait.cond.notify_all()

    def wake_stream(self, stream_id: int) -> None:
        """Wake the threads waiting to send on ``stream_id`` (its call was cancelled, its
        deadline passed), and no other."""
        with self.lock:
            self._wake_stream_locked(stream_id)

    def _check_flood(self, events: list[h2.events.Event]) -> str | None:
        """Count what the peer made us do; the name of a limit it broke, if any."""
        now = 0.0
        allow = self._flood.allow
        for event in events:
            kind = _FLOOD_KINDS.get(type(event))
            if kind is None:
                continue
            if type(event) is h2.events.DataReceived and (event.data or event.stream_ended):
                continue
            now = now or time.monotonic()
            if not allow(kind, now):
                return kind
        return None

    def calm_down(self, reason: str) -> None:
        """The peer abuses us: GOAWAY ENHANCE_YOUR_CALM and close (grpc-go, nghttp2)."""
        log.warning("closing connection from %s: %s flood", self.peer, reason)
        with self.lock:
            if not self.closed:
                try:
                    self.conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                               additional_data=f"too many {reason}".encode())
                except h2.exceptions.ProtocolError:
                    pass
        try:
            self.flush()
        except RpcError:
            pass
        self._terminate(UnavailableError(StatusCode.UNAVAILABLE,
                                         f"connection closed: too many {reason}"))

    def _handshake(self, data: bytes) -> bytes:
        """Feed the TLS handshake (loop thread); the application data after it."""
        assert self.tls is not None
        try:
            done, output = self.tls.handshake_step(data)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.warning("TLS handshake with %s failed: %s", self.peer, exc)
            self._terminate(UnavailableError(StatusCode.UNAVAILABLE,
                                             f"TLS handshake failed: {exc}"))
            return b""
        if output:
            self._send_raw(output)
        if not done:
            return b""
        self.secured = True
        self.handshake_done()
        plaintext, _ = self.tls.decrypt(b"")
        self.flush()  # the connection preface, now encrypted
        return plaintext

    def handshake_done(self) -> None:
        """The TLS handshake finished (loop thread)."""

    def _terminate(self, error: RpcError) -> None:
        """End the connection: fail what runs on it and close the socket (any thread
        via close(); the loop thread here)."""
        with self.lock:
            if self.error is None:
                self.error = error
            first = not self._terminated
            self._terminated = True
            self.closed = True
            self.lock.notify_all()
        if not first:
            return
        if self.loop.in_loop():
            self.loop.unregister(self)
        self._outbuf = bytearray()  # nothing more will be sent
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        self.connection_lost(self.error or error)
        if self.loop.in_loop():
            self._discard_input()
        with self._send_lock:  # no other thread is inside sock.send on this fd now
            try:
                self.sock.close()
            except OSError:
                pass

    def _discard_input(self) -> None:
        """Read what the peer already sent (loop thread): closing a socket with unread
        input sends a reset, which can destroy our GOAWAY before the peer reads it."""
        for _ in range(16):  # bounded: a peer still sending gets its reset
            try:
                if not self.sock.recv_into(self.loop.buffer):
                    return
            except OSError:
                return

    def close(self, error: RpcError | None = None) -> None:
        """Close the connection; the loop fails what is in flight."""
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            already = self.closed
            self.closed = True
            self.lock.notify_all()
        if already and self._terminated:
            return
        if self.loop.in_loop():
            self._terminate(error or CancelledError(StatusCode.CANCELLED, "closed"))
        elif not self.loop.call_soon(
                lambda: self._terminate(error or CancelledError(StatusCode.CANCELLED,
                                                                "closed"))):
            self._terminate(error or CancelledError(StatusCode.CANCELLED, "closed"))

    def join(self, timeout: float | None = None) -> None:
        """Wait until the loop has let go of this connection."""
        if self.loop.in_loop():
            return  # the loop terminates it after this callback returns
        with self.lock:
            self.lock.wait_for(lambda: self._terminated, timeout)

    # -- GOAWAY and keepalive ------------------------------------------------------

    def send_goaway(self, last_stream_id: int | None = None,
                    error_code: int = h2.errors.ErrorCodes.NO_ERROR) -> None:
        """Tell the peer to open no more streams; those up to ``last_stream_id`` go on."""
        with self.lock:
            if self.closed:
                return
            self.conn.send_goaway(error_code, last_stream_id)
        try:
            self.flush()
        except RpcError:
            pass

    def start_keepalive(self, scheduler: Scheduler, interval: float, timeout: float,
                        wanted: Callable[[], bool]) -> None:
        """PING after ``interval`` s without incoming bytes (while ``wanted()``); close
        the connection as UNAVAILABLE when nothing arrives within ``timeout`` s."""

        def later(delay: float, fn: Callable[[], None]) -> None:
            # Kept so that closing cancels it: a pending tick must not hold a closed
            # connection (and its h2 state) for the whole interval.
            self._keepalive_timer = scheduler.call_later(delay, fn)
            if self.closed:  # closed meanwhile: _terminate may have missed this one
                self._keepalive_timer.cancel()

        def tick() -> None:
            if self.closed:
                return
            idle = time.monotonic() - self.last_activity
            if idle < interval or not wanted():
                later(max(interval - idle, 0.01), tick)
                return
            sent_at = time.monotonic()
            try:  # never waits: flush only hands bytes to the socket or the loop
                self.call_h2(self.conn.ping, b"dubbo-ka")
            except (RpcError, h2.exceptions.ProtocolError):
                return
            later(timeout, lambda: check(sent_at))

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

        later(interval, tick)

    # -- sending -------------------------------------------------------------------

    def flush(self) -> None:
        """Hand what h2 has queued to the socket, in order, without ever waiting on it.

        Any thread may flush: what the socket does not take now waits in ``_outbuf``
        and the loop writes it once the socket is writable. So no thread (the loop,
        the timer, a handler) can be held by a peer that stopped reading, and two
        peers whose sockets are both full cannot deadlock.
        """
        with self._send_lock:
            if not self.secured:
                return  # h2 keeps its output until the TLS handshake is done
            with self.lock_mutex:  # ``lock``
                parts = self.conn.take_output()
                self._h2_pending = 0
                backlog_waiters = self._backlog_waiters
            if self.tls is not None:  # under the send lock: records in order
                failure = self._write_locked(self.tls.encrypt(b"".join(parts)))
            elif len(parts) > 1:
                failure = self._write_parts_locked(parts)
            else:
                failure = self._write_locked(parts[0] if parts else b"")
            if backlog_waiters and len(self._outbuf) < OUTBOUND_HIGH_WATER:
                # What h2 held counted in the backlog and is now with the socket.
                self._drained()
        if failure is not None:
            self.close(failure)
            raise self.error or failure

    def _send_raw(self, data: bytes) -> None:
        """Bytes that bypass h2 (the TLS handshake)."""
        with self._send_lock:
            failure = self._write_locked(data)
        if failure is not None:
            self.close(failure)

    def _write_parts_locked(self, parts: list[OutputPart]) -> RpcError | None:
        """``_write_locked`` for parts written back to back: one ``sendmsg``, no join
        (a large DATA frame's payload is a view of the sender's message)."""
        if self._outbuf:
            for part in parts[:-1]:
                self._outbuf += part
            return self._write_locked(parts[-1])
        try:
            sent = self.sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._outbuf = bytearray()
            return UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}")
        for index, part in enumerate(parts):
            if sent < len(part):  # the socket took up to here: keep the rest
                outbuf = self._outbuf  # empty (looked at above)
                outbuf += memoryview(part)[sent:]
                for later in parts[index + 1 :]:
                    outbuf += later
                return self._write_locked(b"")  # bounds it, has the loop write it
            sent -= len(part)
        self._watch_writable_locked(False)
        return None

    def _write_locked(self, data: OutputPart) -> RpcError | None:
        """Send ``data`` after what waits, keeping what the socket refuses (send lock
        held); why the connection must close, if it must."""
        outbuf = self._outbuf
        try:
            if not outbuf:
                if not data:
                    self._watch_writable_locked(False)
                    return None
                sent = self.sock.send(data)
                if sent == len(data):
                    self._watch_writable_locked(False)
                    return None
                outbuf += memoryview(data)[sent:]
            else:
                if data:
                    outbuf += data
                backlog = len(outbuf)
                sent = self.sock.send(outbuf)
                del outbuf[:sent]
                if not outbuf:
                    self._watch_writable_locked(False)
                    if backlog >= OUTBOUND_LOW_WATER:
                        self._drained()
                    return None
                if backlog >= OUTBOUND_LOW_WATER > len(outbuf):
                    self._drained()
        except (BlockingIOError, InterruptedError):
            if data and not outbuf:
                outbuf += data
        except OSError as exc:
            self._outbuf = bytearray()
            return UnavailableError(StatusCode.UNAVAILABLE, f"connection lost: {exc}")
        if len(outbuf) > self.max_send_buffer:
            log.warning("closing connection to %s: %d bytes queued for a peer that does "
                        "not read", self.peer, len(outbuf))
            self._outbuf = bytearray()
            return UnavailableError(StatusCode.UNAVAILABLE,
                                    "connection closed: the peer does not read")
        self._watch_writable_locked(True)
        return None

    def _watch_writable_locked(self, wanted: bool) -> None:
        """Have the loop write what waits once the socket takes it (send lock held)."""
        if self._want_write is not wanted:
            self._want_write = wanted
            if self.loop.in_loop():
                self.loop.set_write_interest(self, wanted)
            else:
                self.loop.call_soon(self._sync_write_interest)

    def _sync_write_interest(self) -> None:
        if not self.closed:
            self.loop.set_write_interest(self, self._want_write)

    def _drained(self) -> None:
        with self.lock:
            if self._backlog_waiters:
                self._wake_streams_locked()

    def backlog(self) -> int:
        """Bytes handed to h2 or the socket layer and not yet sent (approximate)."""
        return self._h2_pending + len(self._outbuf)

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

    def check_sendable(self, get_stream_error: Callable[[], RpcError | None]) -> None:
        """Raise what stops a send on a stream now: its own error (``get_stream_error``,
        the call's), else the connection's if it closed (``lock`` held)."""
        err = get_stream_error()
        if err is not None:
            raise err
        self.check_open()

    def send_data(
        self,
        stream_id: int,
        data: Payload,
        end_stream: bool,
        deadline: Deadline | None,
        get_stream_error: Callable[[], RpcError | None],
        trailers: list[tuple[str, str]] | None = None,
        block: bool = True,
        send_timeout: float | None = None,
    ) -> tuple[memoryview, ...] | None:
        """Send ``data`` (bytes, or a tuple of parts sent back to back, which spares
        joining a large message to its prefix) on a stream as flow control and the
        outbound backlog allow, waiting while either is shut.

        ``get_stream_error`` reports a reset or cancel of the stream, which ends the wait;
        so do ``deadline`` and, with ``send_timeout``, that many seconds in which the
        peer took nothing (``SendStalledError``). ``trailers``, when given, follow the
        data in the same write. With ``block`` false, a shut window returns the unsent
        rest instead of waiting.
        """
        if type(data) is bytes and self._send_at_once(stream_id, data, end_stream,
                                                      get_stream_error, trailers):
            self.flush()
            return None
        parts: list[bytes | memoryview]
        if type(data) is bytes:  # one message: it goes to h2 as it is if it fits a frame
            parts = [data] if data else []
            total = len(data)
        else:
            parts = [memoryview(p) for p in (data if isinstance(data, tuple) else (data,))
                     if len(p)]
            total = sum(map(len, parts))
        index = offset = sent = 0  # position: parts[index][offset:]
        stalled_at = 0.0
        conn = self.conn
        while True:
            with self.lock_mutex:  # ``lock``'s mutex (a Condition's enter, without the call)
                while True:
                    self.check_sendable(get_stream_error)
                    if sent == total:
                        break
                    window_room = conn.local_flow_control_window(stream_id)
                    window = min(window_room,
                                 OUTBOUND_HIGH_WATER - self._h2_pending - len(self._outbuf))
                    if window > 0:
                        break
                    if not block:
                        return (memoryview(parts[index])[offset:],
                                *(memoryview(p) for p in parts[index + 1 :]))
                    wait = None if deadline is None else deadline.remaining()
                    if wait is not None and wait <= 0:
                        raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                                    "Deadline Exceeded")
                    if send_timeout is not None:
                        now = time.monotonic()
                        stalled_at = stalled_at or now
                        left = stalled_at + send_timeout - now
                        if left <= 0:
                            raise SendStalledError(
                                StatusCode.CANCELLED,
                                f"the peer read nothing for {send_timeout:g}s")
                        wait = left if wait is None else min(wait, left)
                    self._wait_locked(stream_id, wait, window_room > 0)
                stalled_at = 0.0
                frame_size = conn.max_outbound_frame_size
                budget = min(window, SEND_BATCH) if sent < total else 0
                pushed = 0
                try:
                    while sent < total and budget > 0:
                        part = parts[index]
                        size = min(frame_size, budget, len(part) - offset)
                        last = sent + size == total
                        if size == len(part):
                            chunk = part  # whole (bytes go to h2 without a view)
                        elif type(part) is memoryview:
                            chunk = part[offset : offset + size]
                        else:
                            chunk = memoryview(part)[offset : offset + size]
                        conn.send_data(stream_id, chunk,
                                       end_stream=end_stream and last and trailers is None)
                        offset += size
                        sent += size
                        budget -= size
                        pushed += size
                        if offset == len(part):
                            index, offset = index + 1, 0
                    if sent == total:
                        if total == 0 and (end_stream and trailers is None):
                            conn.send_data(stream_id, b"", end_stream=True)
                        if trailers is not None:
                            conn.send_headers(stream_id, trailers, end_stream=True)
                except h2.exceptions.ProtocolError as exc:
                    raise self._refused(exc, get_stream_error) from None
                finally:
                    self._h2_pending += pushed
            self.flush()
            if sent == total:
                return None

    def _send_at_once(self, stream_id: int, data: bytes, end_stream: bool,
                      get_stream_error: Callable[[], RpcError | None],
                      trailers: list[tuple[str, str]] | None) -> bool:
        """``send_data``'s first pass for a non-empty message that fits one DATA frame,
        the windows and the backlog as they are (a small message, nearly always): the
        same checks and pushes, in one lock hold, without the general loop. False,
        having done nothing, when it does not fit."""
        size = len(data)
        conn = self.conn
        with self.lock_mutex:  # ``lock``
            self.check_sendable(get_stream_error)
            if not (0 < size <= SEND_BATCH and size <= conn.max_outbound_frame_size
                    and size <= OUTBOUND_HIGH_WATER - self._h2_pending - len(self._outbuf)
                    and size <= conn.local_flow_control_window(stream_id)):
                return False
            try:
                conn.send_data(stream_id, data, end_stream=end_stream and trailers is None)
                self._h2_pending += size
                if trailers is not None:
                    conn.send_headers(stream_id, trailers, end_stream=True)
            except h2.exceptions.ProtocolError as exc:
                raise self._refused(exc, get_stream_error) from None
        return True

    def _refused(self, exc: Exception, get_stream_error: Callable[[], RpcError | None]
                 ) -> RpcError:
        """What a send raises when h2 refuses it (lock held)."""
        if self.closed:  # the connection failed: say why
            return self.error or UnavailableError(StatusCode.UNAVAILABLE,
                                                  f"connection closed: {exc}")
        # Reset by the peer in a read whose events are not handled yet.
        return get_stream_error() or CancelledError(StatusCode.CANCELLED,
                                                    f"stream closed: {exc}")

    def _wait_locked(self, stream_id: int, timeout: float | None, for_backlog: bool) -> None:
        """Wait (lock held) on the stream's own condition until something that concerns
        it happens (see ``_wake_for``), or ``timeout``."""
        wait = self._stream_waits.get(stream_id)
        if wait is None:
            wait = self._stream_waits[stream_id] = _StreamWait(self.lock_mutex)
        wait.count += 1
        self._backlog_waiters += for_backlog
        try:
            wait.cond.wait(timeout)
        finally:
            self._backlog_waiters -= for_backlog
            wait.count -= 1
            if not wait.count:
                del self._stream_waits[stream_id]

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
            self._wake_stream_locked(stream_id)
        try:
            self.flush()
        except RpcError:
            pass

    # -- events (subclasses) -------------------------------------------------------

    def receive_data(self, event: h2.events.DataReceived, inbox: Inbox | None = None,
                     on_error: Callable[[RpcError], object] | None = None) -> None:
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

    # -- stream operations for the call layer (server) --
    # server.py drives h2 only through these and never sees an h2 object: it gets
    # plain values (stream ids, header lists, error codes) from dispatch_server_events
    # and hands plain values back (what dubbo.call.server_stream.ServerStream decided).

    # What h2 raises for a stream the peer already reset (and h2 may have forgotten).
    _STREAM_GONE = (h2.exceptions.StreamClosedError, h2.exceptions.StreamIDTooLowError,
                    h2.exceptions.NoSuchStreamError)

    def dispatch_server_events(self, events: list[h2.events.Event]) -> None:
        """``handle_events`` for the server: each of h2's events of one read becomes a
        call with plain values (``on_request``, ``request_inbox``, ``on_request_end``,
        ``on_request_reset``, ``on_client_settings``, ``on_client_goaway``)."""
        # A request reset in the same read (rapid reset) is never started: it would
        # cost a worker thread for a call nobody waits for.
        reset_in_read: set[int] | tuple[()] = ()
        if len(events) > 1:  # (a plain loop: no generator frame for the usual "none")
            for event in events:
                if type(event) is h2.events.StreamReset:
                    reset_in_read = {e.stream_id for e in events
                                     if type(e) is h2.events.StreamReset}
                    break
        for event in events:
            if self.closed:  # ended while handling this read: the rest is moot
                return
            try:
                if isinstance(event, h2.events.DataReceived):
                    route = self.request_inbox(event.stream_id)
                    if route is None:  # finished by us, or refused
                        self.receive_data(event)
                    else:
                        self.receive_data(event, *route)
                elif isinstance(event, h2.events.RequestReceived):
                    self.on_request(event.stream_id, event.headers,
                                    event.stream_id in reset_in_read)
                elif isinstance(event, h2.events.RemoteSettingsChanged):
                    self.on_client_settings()
                elif isinstance(event, h2.events.StreamEnded):
                    self.on_request_end(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    self.on_request_reset(event.stream_id, int(event.error_code or 0))
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.on_client_goaway(int(event.error_code or 0))
            except self._STREAM_GONE as exc:
                # An answer to a stream the same read also reset: that stream is over,
                # the rest of the connection is not.
                log.debug("stream closed while handling %r: %r", event, exc)

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                   reset_in_read: bool) -> None:  # pragma: no cover
        """A request's HEADERS (``reset_in_read``: its RST_STREAM came in the same read)."""
        raise NotImplementedError

    def request_inbox(self, stream_id: int
                      ) -> tuple[Inbox, Callable[[RpcError], object]] | None:  # pragma: no cover
        """Where a DATA frame's messages go, and who hears of bad input; None: drop them."""
        raise NotImplementedError

    def on_request_end(self, stream_id: int) -> None:  # pragma: no cover
        """The client's END_STREAM."""
        raise NotImplementedError

    def on_request_reset(self, stream_id: int, error_code: int) -> None:  # pragma: no cover
        """The client's RST_STREAM."""
        raise NotImplementedError

    def on_client_settings(self) -> None:  # pragma: no cover
        """The client's SETTINGS arrived."""
        raise NotImplementedError

    def on_client_goaway(self, error_code: int) -> None:  # pragma: no cover
        """The client's GOAWAY."""
        raise NotImplementedError

    def push_stream_frames(self, stream_id: int, headers: list[tuple[str, str]] | None,
                           end_stream: bool = False, reset: int | None = None) -> None:
        """With ``lock`` held: queue a HEADERS block (if any), then RST_STREAM(``reset``)
        (if not None); ``flush`` sends them. Raises ``CancelledError`` if h2 refuses
        (the stream was reset by the peer meanwhile, or is closed), and then queues
        nothing after the refused frame."""
        try:
            if headers is not None:
                self.conn.send_headers(stream_id, headers, end_stream=end_stream)
            if reset is not None:
                self.conn.reset_stream(stream_id, reset)
        except h2.exceptions.ProtocolError as exc:
            raise CancelledError(StatusCode.CANCELLED, f"stream closed: {exc}") from None

    def send_window(self, stream_id: int) -> int:
        """With ``lock`` held: bytes the stream may send now (its and the connection's
        flow-control window), what ``push_stream_response`` may carry without waiting."""
        return min(int(self.conn.local_flow_control_window(stream_id)),
                   int(self.conn.max_outbound_frame_size))

    def push_stream_response(self, stream_id: int, headers: list[tuple[str, str]],
                             body: bytes, reset: int | None = None) -> None:
        """With ``lock`` held, never waiting: a whole plain-HTTP response, HEADERS then
        ``body`` (at most ``send_window``) with END_STREAM, then RST_STREAM(``reset``) if
        not None; ``flush`` sends them. Raises ``CancelledError`` as
        ``push_stream_frames`` does."""
        try:
            self.conn.send_headers(stream_id, headers)
            self.conn.send_data(stream_id, body, end_stream=True)
            if reset is not None:
                self.conn.reset_stream(stream_id, reset)
        except h2.exceptions.ProtocolError as exc:
            raise CancelledError(StatusCode.CANCELLED, f"stream closed: {exc}") from None

    def reply_room(self, stream_id: int) -> int:
        """With ``lock`` held: how many bytes of DATA ``push_stream_reply`` may carry on
        the stream now, without waiting (its window and the connection's, one frame,
        the outbound backlog); 0 for a stream h2 has closed or forgotten."""
        conn = self.conn
        try:
            window = conn.local_flow_control_window(stream_id)
        except h2.exceptions.ProtocolError:
            return 0
        return min(window, conn.max_outbound_frame_size, OUTBOUND_HIGH_WATER - self.backlog())

    def push_stream_reply(self, stream_id: int, headers: list[tuple[str, str]] | None,
                          body: bytes, trailers: list[tuple[str, str]]) -> None:
        """With ``lock`` held, never waiting: a whole gRPC reply, HEADERS (unless None:
        they went out before), ``body`` (at most ``reply_room``) in one DATA frame, then
        ``trailers`` with END_STREAM; ``flush`` sends them. Raises as ``send_data`` does:
        the connection's error, or ``CancelledError`` for a stream reset meanwhile."""
        conn = self.conn
        try:
            if headers is not None:
                conn.send_headers(stream_id, headers)
            conn.send_data(stream_id, body)
            conn.send_headers(stream_id, trailers, end_stream=True)
        except h2.exceptions.ProtocolError as exc:
            if self.closed:
                raise self.error or UnavailableError(
                    StatusCode.UNAVAILABLE, f"connection closed: {exc}") from None
            raise CancelledError(StatusCode.CANCELLED, f"stream closed: {exc}") from None
        self._h2_pending += len(body)

    def refuse_streams_ourselves(self) -> None:
        """Streams over our MAX_CONCURRENT_STREAMS are the server's to refuse (with
        REFUSED_STREAM, a stream error) rather than h2's (a connection error)."""
        self.conn.streams_limited_by_us = True

    def open_streams_before(self, stream_id: int) -> int:
        """Streams the client opened before ``stream_id`` that are not closed."""
        return self.conn.count_open_inbound(before=stream_id)

    def over_stream_limit(self, stream_id: int, limit: int) -> bool:
        """``open_streams_before(stream_id) >= limit``, answered without counting while
        h2 knows of no more than ``limit`` streams (the usual case)."""
        return len(self.conn.streams) > limit and \
            self.conn.count_open_inbound(before=stream_id) >= limit

    def highest_inbound_stream_id(self) -> int:
        """The last stream the client opened (what a draining GOAWAY names)."""
        return int(self.conn.highest_inbound_stream_id)

    # -- stream operations for the call layer (client) --
    # dubbo.client drives its streams only through these: it never sees h2 or its
    # events. Each h2 event becomes one plain-valued ``client_*`` hook call, which
    # ClientConnection implements.

    def peer_max_concurrent_streams(self) -> int:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS (``lock`` held)."""
        limit: int = self.conn.remote_settings.max_concurrent_streams
        return limit

    def start_stream(self, headers: list[tuple[str, str]], end_stream: bool = False) -> int:
        """Open the next client stream with ``headers`` (``lock`` held); its id. The
        headers go out with the next flush."""
        try:
            stream_id: int = self.conn.get_next_available_stream_id()
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:  # the connection just failed
            raise self.error or UnavailableError(
                StatusCode.UNAVAILABLE, f"connection failed: {exc}") from None
        return stream_id

    def push_first_data(self, stream_id: int, data: bytes) -> bool:
        """With ``lock`` held, right after ``start_stream``: queue a small request's whole
        body with END_STREAM behind its HEADERS, when it fits now (one frame, within the
        stream's and the connection's window, no backlog to wait for). False: nothing
        was queued, ``send_data`` sends it. Spares a small unary call a second lock
        hold and ``send_data``'s general machinery; the headers and the body leave in
        the caller's next flush."""
        size = len(data)
        conn = self.conn
        if size > INLINE_DATA_MAX or size > conn.max_outbound_frame_size \
                or self.backlog() + size > OUTBOUND_HIGH_WATER \
                or size > conn.local_flow_control_window(stream_id):
            return False
        try:
            conn.send_data(stream_id, data, end_stream=True)
        except h2.exceptions.ProtocolError:
            return False  # send_data will say what is wrong
        self._h2_pending += size
        return True

    def dispatch_client_events(self, events: list[h2.events.Event]) -> None:
        """A client connection's ``handle_events``: each event as a hook call with
        plain values. An exception from a hook for one stream fails that stream only
        (``client_event_failed``); the others go on."""
        for event in events:
            try:
                if isinstance(event, h2.events.DataReceived):
                    sink = self.client_data_sink(event.stream_id)
                    if sink is None:
                        self.receive_data(event)
                    else:
                        self.receive_data(event, sink.inbox, sink.data_failed)
                    if event.stream_ended is not None:
                        self.client_stream_ended(event.stream_id)
                elif isinstance(event, h2.events.ResponseReceived):
                    self.client_response_headers(event.stream_id, event.headers,
                                                 event.stream_ended is not None)
                elif isinstance(event, h2.events.TrailersReceived):
                    self.client_trailers(event.stream_id, event.headers)
                elif isinstance(event, h2.events.StreamReset):
                    self.client_stream_reset(event.stream_id, int(event.error_code or 0))
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.client_goaway(event.last_stream_id or 0, int(event.error_code or 0))
            except Exception as exc:  # a malformed response fails its own call only
                if not self.client_event_failed(getattr(event, "stream_id", 0) or 0, exc):
                    raise

    def client_data_sink(self, stream_id: int) -> DataSink | None:  # pragma: no cover
        """Where DATA of ``stream_id`` goes; ``None``: nobody wants it (credit it)."""
        raise NotImplementedError

    def client_response_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                                end_stream: bool) -> None:  # pragma: no cover
        raise NotImplementedError

    def client_trailers(self, stream_id: int,
                        headers: list[tuple[bytes, bytes]]) -> None:  # pragma: no cover
        """Trailers: they always end the server's side (h2 checks)."""
        raise NotImplementedError

    def client_stream_ended(self, stream_id: int) -> None:  # pragma: no cover
        """END_STREAM on DATA (after that DATA was fed)."""
        raise NotImplementedError

    def client_stream_reset(self, stream_id: int, error_code: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def client_goaway(self, last_stream_id: int, error_code: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def client_event_failed(self, stream_id: int,
                            error: Exception) -> bool:  # pragma: no cover
        """Handling an event of ``stream_id`` raised ``error``: fail that stream;
        False if there is none (the error is then the connection's)."""
        raise NotImplementedError


class DataSink(Protocol):
    """A client stream that takes DATA (``H2Transport.client_data_sink``)."""

    @property
    def inbox(self) -> Inbox: ...

    def data_failed(self, error: RpcError) -> object:
        """The DATA could not be decoded (framing, size, compression)."""
