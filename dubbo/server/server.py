"""The Triple server: an accept thread, a reader thread per connection, and a bounded
worker pool running one handler per HTTP/2 stream."""

from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..call.server_stream import Event, Send, ServerStream
from ..configs import ServiceConfig
from ..grpc_compat import server as grpc_compat
from ..proxy.handlers import RpcMethodHandler, RpcServiceHandler
from ..services.health import HealthServicer
from ..services.reflection import ReflectionServicer
from ..status import (
    CancelledError,
    DeadlineExceededError,
    RpcError,
    SendStalledError,
    StatusCode,
    UnavailableError,
    error_for,
    status_from_rst,
)
from ..transport import (
    DEFAULT_MAX_HEADER_LIST_SIZE,
    DEFAULT_MAX_SEND_BUFFER,
    FAST_PRODUCER,
    H2Transport,
    Inbox,
    MessageWriter,
    Payload,
)
from ..transport.heap import HEAP_HINT_MIN, keep_heap_for
from ..transport.ioloop import IOLoop
from ..transport.timer import Scheduler, TimerHandle
from ..transport.tls import TLSLayer
from ..transport.tls import prepare as tls_prepare
from ..wire.compression import (
    Codec,
    accept_encoding_header,
    choose_response_encoding,
    codec_name,
    get_codec,
    resolve,
    unsupported_encoding_error,
)
from ..wire.deadline import Deadline
from ..wire.framing import DEFAULT_MAX_MESSAGE_SIZE, frame_message
from ..wire.limits import FloodLimits
from ..wire.metadata import (
    MetadataLike,
    RequestHead,
    RequestRejected,
    encode_metadata,
    parse_request_headers,
)
from . import signals
from .context import ServicerContext
from .http_unary import HttpUnary, is_plain_http
from .memory import limit_malloc_arenas, release_free_memory
from .processes import ProcessGroup, SharedHealth, check_processes, reuse_port
from .workers import WorkerPool

if TYPE_CHECKING:  # pragma: no cover
    from ..interceptors.base import ServerInterceptor

__all__ = ["Server"]

log = logging.getLogger("dubbo.server")

DEFAULT_MAX_WORKERS = 1000
# Per connection, as nghttp2 and h2 default to: clients queue beyond it, and what one
# connection's calls can hold (workers, replies in flight) stays a fraction of the server.
DEFAULT_MAX_CONCURRENT_STREAMS = 100
DEFAULT_KEEPALIVE_TIME = 7200.0  # grpc's server default: 2 hours
DEFAULT_KEEPALIVE_TIMEOUT = 20.0
DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_SEND_TIMEOUT = 30.0  # a peer that reads nothing this long loses its stream
DEFAULT_WORKER_IDLE_TIMEOUT = 60.0
CALLBACK_THREADS = 4  # threads running add_callback functions off the I/O thread
TRIM_INTERVAL = 2.0  # seconds between looks at whether calls ended (memory.py)
QUIET_TRIMS = 3  # trims on the quiet ticks after calls or connections ended
# Request heads a connection remembers (ServerConnection._remember): how many, their
# total size (name + value + 32 per field, as HPACK counts), the largest one kept.
_KNOWN_ENTRIES = 32
_KNOWN_BYTES = 64 * 1024
_KNOWN_BLOCK_BYTES = 4 * 1024


class ServerCall:
    """The server side of one call (one HTTP/2 stream), run by one worker thread.

    Every way the call ends is a transition of ``stream`` (a ``ServerStream``), which
    says what to send; this class does the sending. The reader thread feeds ``inbox``
    and reports resets and END_STREAM; the timer thread the deadline; the worker the
    rest. Locks: ``transport.lock`` guards ``stream`` (not thread-safe itself) and
    ``_callbacks``; ``writer``, ``response_codec`` and ``_trailing_metadata`` are the
    worker's alone.
    """

    __slots__ = ("transport", "stream", "stream_id", "head", "handler", "inbox", "deadline",
                 "_context", "_trailing_metadata", "_callbacks", "server", "timer",
                 "response_codec", "writer", "holds_slot")

    def __init__(self, server: Server, transport: ServerConnection, stream: ServerStream,
                 head: RequestHead, handler: RpcMethodHandler) -> None:
        self.server = server
        self.transport = transport
        self.stream = stream  # accepted (OPEN) by the connection
        self.stream_id = stream.stream_id
        self.head = head
        self.handler = handler
        inbox = self.inbox = Inbox(server.max_receive_message_size, on_large=keep_heap_for)
        inbox.drop_empty = head.drops_empty_messages
        encoding = head.encoding
        if encoding is not None and encoding != "identity":
            codec = get_codec(encoding)
            assert codec is not None  # unsupported encodings are refused before this
            limit = server.max_receive_message_size
            inbox.set_decompressor(lambda data: codec.decompress(data, limit))
            inbox.on_bad_message = self.bad_input
        self.response_codec: Codec | None = None
        self.writer: MessageWriter | None = None  # made by the first streamed reply
        if server.compression:
            self.set_compression(server.compression)
        # The context is made when first asked for: most handlers never take one.
        self._context: ServicerContext | None = None
        self._trailing_metadata: list[tuple[str, str]] = []
        self._callbacks: list[Callable[[], Any]] | None = []
        # Counted against max_workers + max_pending_calls until the final status is on
        # its way (Server._lock): a client that starts its next call on seeing it must
        # not find the server still full of its last one.
        self.holds_slot = True
        timeout = head.timeout
        if timeout is None:  # no deadline, no timer
            self.deadline: Deadline | None = None
            self.timer: TimerHandle | None = None
        else:
            self.deadline = Deadline.after(timeout)
            self.timer = server.timer.call_later(timeout, self.expire)

    # -- state ---------------------------------------------------------------------

    @property
    def context(self) -> ServicerContext:
        """The handler's context, made on first use (the worker's, or the reader's
        before the call is handed over)."""
        context = self._context
        if context is None:
            context = self._context = ServicerContext(self)
        return context

    def _status_set(self) -> tuple[StatusCode | None, str]:
        """What the handler set with set_code/set_details (None, "" without a context)."""
        context = self._context
        if context is None:
            return None, ""
        return context.code, context.details

    @property
    def final_status(self) -> tuple[StatusCode, str] | None:
        """The status the call ended with (sent, or why it was cut off), once it has."""
        return self.stream.status

    def is_active(self) -> bool:
        if not self.stream.live:
            return False
        return self.deadline is None or not self.deadline.expired()

    def get_error(self) -> RpcError | None:
        """Why the stream can no longer carry replies, if it cannot."""
        error = self.stream.cancel_error
        if error is not None:
            return error
        if self.deadline is not None and self.deadline.expired():
            return DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return None

    def cancel(self, error: RpcError) -> None:
        """The connection (or the server) can carry the call no further: stop the
        handler's I/O (reader, timer or stopping thread)."""
        with self.transport.lock:
            ended = self.stream.lost(error)
            if ended:
                self.transport.lock.notify_all()
        if ended:
            self._stopped(error)

    def reset_by_peer(self, error: RpcError) -> None:
        """RST_STREAM from the client (reader thread): stop the handler's I/O."""
        with self.transport.lock:
            ended = self.stream.peer_reset(error)
            if ended:
                self.transport.lock.notify_all()
        if ended:
            self._stopped(error)

    def _stopped(self, error: RpcError) -> None:
        # The handler may still be reading, even after an early status went out.
        self.inbox.fail(error)
        self._run_callbacks(elsewhere=True)  # not the handler's thread

    def expire(self) -> None:
        """The deadline passed (timer thread): answer DEADLINE_EXCEEDED now, even while
        the handler is busy, reset the stream, and make the handler's next I/O raise."""
        self.end_now(Event.DEADLINE,
                     DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def bad_input(self, error: RpcError) -> None:
        """A request could not be decoded (framing, size or compression; reader or
        handler thread): answer with its status and stop the handler (grpc "Early
        Server Closure": RST_STREAM NO_ERROR to a client still sending)."""
        self.end_now(Event.BAD_INPUT, error)

    def end_now(self, event: Event, error: RpcError) -> None:
        """End the call with ``error``'s status (``event``: DEADLINE, SEND_STALLED or
        BAD_INPUT) from any thread, without waiting: replies still waiting are
        dropped, the status goes straight to h2, RST_STREAM stops a client still
        sending, and the handler's next I/O raises ``error``."""
        transport = self.transport
        with transport.lock:
            if transport.closed:
                return
            send = self.stream.end_now(event, error, self._trailing_metadata)
            if not send:  # the call had ended already
                return
            try:
                transport.push_stream_frames(self.stream_id, send.headers, send.end_stream,
                                             send.reset)
            except RpcError:  # reset by the peer meanwhile, or our END_STREAM went out
                pass
            transport.lock.notify_all()
        try:
            transport.flush()
        except RpcError:
            pass
        self._stopped(error)

    def cancel_locally(self) -> None:
        """context.cancel(), or the server's stop after its grace: RST_STREAM(CANCEL)."""
        error = CancelledError(StatusCode.CANCELLED, "Cancelled by the server")
        with self.transport.lock:
            ended = self.stream.live
            send = self.stream.cancel_locally(error)
        if send.reset is not None:
            self.transport.reset_stream(self.stream_id, send.reset)
        if ended:
            with self.transport.lock:
                self.transport.lock.notify_all()
            self._stopped(error)

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self.transport.lock_mutex:
            if self._callbacks is not None:
                self._callbacks.append(callback)
                return True
        return False

    def _run_callbacks(self, elsewhere: bool = False) -> None:
        """Run the add_callback functions once. ``elsewhere``: on a thread of their own,
        for the reader and timer threads, which user code must not hold up."""
        with self.transport.lock_mutex:
            callbacks, self._callbacks = self._callbacks, None
        if not callbacks:
            return
        if elsewhere:
            try:  # a few threads of their own: a thousand cancelled calls start no thousand
                self.server.callback_pool.submit(lambda: _run_all(callbacks))
            except RuntimeError:  # the server stopped meanwhile
                threading.Thread(target=_run_all, args=(callbacks,), name="dubbo-callbacks",
                                 daemon=True).start()
        else:
            _run_all(callbacks)

    # -- requests ------------------------------------------------------------------

    def requests(self) -> Iterator[Any]:
        """The blocking request iterator handed to streaming handlers."""
        inbox = self.inbox
        get = inbox.get
        acknowledge = self.transport.acknowledge
        deserialize = self.handler.request_deserializer
        while True:
            writer = self.writer
            if writer is not None and writer.pending and not inbox.ready():
                writer.flush()  # about to wait for the client: let it see our replies
            message, credit = get(self.deadline)
            if credit:
                acknowledge(self.stream_id, credit)
            if message is None:
                return
            if deserialize is None:
                yield message
                continue
            try:  # (_deserialize, inlined: a call less per message)
                request = deserialize(message)
            except Exception as exc:
                raise RpcError(StatusCode.INTERNAL,
                               f"Exception deserializing request: {exc}") from exc
            yield request

    def _deserialize(self, deserialize: Callable[[bytes], Any], message: bytes) -> Any:
        try:
            return deserialize(message)
        except Exception as exc:
            raise RpcError(StatusCode.INTERNAL, f"Exception deserializing request: {exc}") from exc

    def single_request(self) -> Any:
        """The one request of a unary or server-stream call (exactly one is required).
        (``requests()`` without the generator: deserialized before the end is awaited.)"""
        get = self.inbox.get
        deadline = self.deadline
        message, credit = get(deadline)
        if credit:
            self.transport.acknowledge(self.stream_id, credit)
        if message is None:
            raise RpcError(StatusCode.INTERNAL, "expected one request message, got none")
        deserialize = self.handler.request_deserializer
        if deserialize is None:
            first = message
        else:
            try:  # (_deserialize, inlined)
                first = deserialize(message)
            except Exception as exc:
                raise RpcError(StatusCode.INTERNAL,
                               f"Exception deserializing request: {exc}") from exc
        message, credit = get(deadline)
        if credit:
            self.transport.acknowledge(self.stream_id, credit)
        if message is not None:
            raise RpcError(StatusCode.INTERNAL, "expected one request message, got several")
        return first

    # -- responses -----------------------------------------------------------------

    def send_initial_metadata(self, metadata: MetadataLike) -> None:
        encoded = encode_metadata(metadata)
        with self.transport.lock:
            if self.stream.replying:
                raise RuntimeError("initial metadata already sent")
            self._send_headers_locked(Event.SEND_HEADERS, encoded)
        self.transport.flush()

    def set_trailing_metadata(self, metadata: MetadataLike) -> None:
        self._trailing_metadata = encode_metadata(metadata)

    def set_compression(self, name: str | None) -> None:
        """Compress replies with ``name`` if the client accepts it (else send them plain:
        a server must not use an encoding the client did not list)."""
        if self.stream.replying:
            raise RuntimeError("set_compression() must come before the first reply")
        resolve(name)  # an unknown name is an error even if the client can't use it
        chosen = choose_response_encoding(name, self.head.accept_encoding)
        self.response_codec = get_codec(chosen) if chosen else None

    def _send_headers_locked(self, event: Event,
                             metadata: list[tuple[str, str]] | None = None) -> None:
        """SEND_HEADERS or SEND_MESSAGE (``transport.lock`` held): the response headers
        unless they went out already; raises if the call can carry nothing more."""
        headers = self._headers_locked(event, metadata)
        if headers is not None:
            self.transport.push_stream_frames(self.stream_id, headers)

    def _headers_locked(self, event: Event,
                        metadata: list[tuple[str, str]] | None = None
                        ) -> list[tuple[str, str]] | None:
        """The SEND_HEADERS or SEND_MESSAGE step (``transport.lock`` held): the response
        headers to send, None if they went out already; raises if the call can carry
        nothing more."""
        self.transport.check_sendable(self.get_error)
        codec = self.response_codec
        stream = self.stream
        step = stream.send_headers if event is Event.SEND_HEADERS else stream.send_message
        return step(metadata or (), codec.name if codec is not None else None,
                    _ACCEPT_ENCODING).headers

    def _frame(self, response: Any) -> Payload:
        serialize = self.handler.response_serializer
        try:
            data = response if serialize is None else serialize(response)
        except Exception as exc:
            # The client sees INTERNAL; the bug is the handler's, so its owner reads it here.
            log.exception("handler %s returned a reply its serializer rejects", self.head.path)
            raise RpcError(StatusCode.INTERNAL, f"Exception serializing response: {exc}") from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            log.error("handler %s returned %s, expected bytes (set response_serializer)",
                      self.head.path, type(data).__name__)
            raise RpcError(StatusCode.INTERNAL,
                           f"handler returned {type(data).__name__}, expected bytes "
                           "(set response_serializer)")
        if len(data) >= HEAP_HINT_MIN:  # its buffers stay in the heap (transport/heap.py)
            keep_heap_for(len(data))
        return frame_message(data, self.response_codec, self.server.max_send_message_size)

    def send_message(self, response: Any, coalesce: bool = False) -> None:
        frame = self._frame(response)
        writer = self.writer
        if writer is None:
            # The first reply: SEND_MESSAGE sends the headers. Later ones are checked
            # by the send itself (``get_error`` under the lock, in send_data).
            with self.transport.lock:
                self._send_headers_locked(Event.SEND_MESSAGE)
            writer = self.writer = MessageWriter(self.transport, self.stream_id, self.deadline,
                                                 self.get_error, self.server.timer,
                                                 send_timeout=self.server.send_timeout)
        writer.write(frame, coalesce)

    def send_unary(self, response: Any,
                   status: tuple[StatusCode | None, str] | None = None) -> None:
        """Headers, the reply and OK trailers in one write (``status``: what
        ``_status_set`` says, if the caller asked already)."""
        frame = self._frame(response)
        code, details = self._status_set() if status is None else status
        transport = self.transport
        stream_id = self.stream_id
        with transport.lock_mutex:
            # The usual case, in one hold of the lock: the window takes the reply whole.
            if type(frame) is bytes and len(frame) <= transport.reply_room(stream_id):
                transport.check_sendable(self.get_error)
                codec = self.response_codec
                headers, block, reset = self.stream.reply_whole(
                    code or StatusCode.OK, details, (),
                    codec.name if codec is not None else None, _ACCEPT_ENCODING,
                    self._trailing_metadata)
                self.server.release_slot(self)
                transport.push_stream_reply(stream_id, headers, frame, block)
                if reset is not None:  # the client still sends: stop it
                    try:
                        transport.push_stream_frames(stream_id, None, reset=reset)
                    except RpcError:
                        pass
                sent = True
            else:
                self._send_headers_locked(Event.SEND_MESSAGE)
                sent = False
        if sent:
            transport.flush()
            return
        transport.send_data(stream_id, frame, True, self.deadline, self.get_error,
                            trailers=self._final_trailers(code or StatusCode.OK, details),
                            send_timeout=self.server.send_timeout)
        self._sent_end()

    def _final_trailers(self, code: StatusCode, details: str) -> list[tuple[str, str]]:
        return self.stream.status_trailers(code, details, self._trailing_metadata)

    def finish(self, code: StatusCode, details: str = "") -> None:
        """Send the status (trailers, or a trailers-only response) unless already done."""
        writer = self.writer
        if writer is not None and writer.pending:
            # Replies still waiting to be packed go out together with the status.
            try:
                writer.close(trailers=self._final_trailers(code, details))
            except SendStalledError as exc:  # the peer reads nothing: give the stream up
                self.end_now(Event.SEND_STALLED, exc)
                return
            except RpcError:
                return
            self._sent_end()
            return
        transport = self.transport
        with transport.lock:
            if transport.closed:
                return
            send = self.stream.finish(code, details, self._trailing_metadata)
            if not send:  # ended already
                return
            self.server.release_slot(self)
            try:
                # The trailers, then RST_STREAM NO_ERROR to a client still sending
                # (grpc "Early Server Closure").
                transport.push_stream_frames(self.stream_id, send.headers, send.end_stream,
                                             send.reset)
            except RpcError:  # reset by the peer meanwhile
                return
        try:
            transport.flush()
        except RpcError:
            return

    def _fail(self, code: StatusCode, details: str, trailing_metadata: Any = None) -> None:
        """End the call with an error status. Never raises: a call must always end
        with a status, even if its trailing metadata turns out to be invalid."""
        try:
            if trailing_metadata and not self._trailing_metadata:
                self._trailing_metadata = encode_metadata(trailing_metadata)
        except ValueError as exc:
            log.error("invalid trailing metadata on %s: %s", self.head.path, exc)
            code, details = StatusCode.INTERNAL, f"invalid trailing metadata: {exc}"
        self.finish(code, details)

    def _sent_end(self) -> None:
        """A send that carried our trailers returned: if the client is still sending,
        tell it to stop (RST_STREAM NO_ERROR, grpc "Early Server Closure")."""
        with self.transport.lock_mutex:
            send = self.stream.sent_end()
        if send.reset is not None:
            self.transport.reset_stream(self.stream_id, send.reset)

    # -- running -------------------------------------------------------------------

    def run(self) -> None:
        handler = self.handler
        call_type = handler.call_type
        args: tuple[Any, ...]
        result: Any = None
        try:
            if not self.stream.live:  # cancelled while it waited for a worker
                return
            if call_type.request_streaming:
                request: Any = self.requests()
            else:
                request = self.single_request()
            if handler.takes_context:
                args = (request, self.context)
            else:
                args = (request,)
            if call_type.response_streaming:
                result = handler.behavior(*args)
                replies = iter(result)
                clock = time.perf_counter
                while True:
                    started = clock()
                    try:
                        response = next(replies)
                    except StopIteration:
                        break
                    self.send_message(response, clock() - started < FAST_PRODUCER)
                code, details = self._status_set()
                self.finish(code or StatusCode.OK, details)
            else:
                response = handler.behavior(*args)
                status = self._status_set()
                code, details = status
                if code is not None and code is not StatusCode.OK:
                    self.finish(code, details)
                else:
                    self.send_unary(response, status)
        except SendStalledError as exc:
            # The peer reads nothing: reset the stream rather than wait on it again.
            log.info("%s on %s: %s", self.head.path, self.transport.peer, exc.details)
            self.end_now(Event.SEND_STALLED, exc)
        except RpcError as exc:
            self._fail(exc.code, exc.details, exc.trailing_metadata)
        except Exception as exc:
            log.exception("handler %s raised", self.head.path)
            self._fail(StatusCode.UNKNOWN, f"Exception calling application: {exc}")
        finally:
            if self.timer is not None:
                self.timer.cancel()
            if hasattr(result, "close"):
                try:
                    result.close()  # run the handler generator's finally blocks now
                except Exception:
                    log.exception("closing the handler of %s failed", self.head.path)
            self._run_callbacks()  # before the call counts as done: stop() waits for them
            self.transport.call_done(self)
            self._break_cycles()

    def _break_cycles(self) -> None:
        """Drop the references that make the call a cycle (its context, writer, inbox
        and stored error point back at it), so what it holds (a request's metadata may
        be 64 KiB, a reply being sent 4 MiB) is freed as the call ends rather than at
        some later garbage collection."""
        self.writer = None
        self.inbox.on_bad_message = None
        self._context = None
        # The error that ended the call was raised in this call's frames (a blocked
        # send holds the reply being sent): its traceback must not keep them.
        for error in (self.stream.cancel_error, self.inbox.error):
            if error is not None:
                error.__traceback__ = None


_ACCEPT_ENCODING = accept_encoding_header()  # our grpc-accept-encoding, fixed at import


@runtime_checkable
class PoolTask(Protocol):
    """What ``Server.submit`` runs on a worker: a ``ServerCall``, or an HTTP/1.1
    request (``http1.py``); ``cancel`` if it never gets to run."""

    def run(self) -> None: ...
    def cancel(self, error: RpcError) -> None: ...


def _run_all(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("call callback %r failed", callback)


class ServerConnection(H2Transport):
    """One accepted connection: routes streams to handlers and feeds their inboxes.

    The transport hands h2's events over as plain values (``on_request``,
    ``request_inbox``, ...); ``lock`` guards ``calls`` and every call's ``stream``.
    """

    # Calls launched while a read is handled, submitted at its end (loop thread).
    _starting: list[ServerCall] | None

    def handle_events(self, events: list[Any]) -> None:
        """h2's events of one read -> on_request, request_inbox, on_request_end, ...

        Calls started by the read go to their workers once the whole read is handled:
        a worker woken earlier would only wait for the reader to let go of the GIL (two
        more futex calls and a context switch per call), and finds its requests and
        their END_STREAM already in its inbox."""
        starting: list[ServerCall] = []
        self._starting = starting
        try:
            self.dispatch_server_events(events)
        finally:
            self._starting = None
            submit = self.server.submit
            for call in starting:
                submit(call)

    def __init__(self, server: Server, sock: socket.socket, loop: IOLoop,
                 tls: TLSLayer | None = None) -> None:
        super().__init__(sock, client_side=False, loop=loop,
                         max_concurrent_streams=server.max_concurrent_streams, tls=tls,
                         max_header_list_size=server.max_header_list_size,
                         max_send_buffer=server.max_send_buffer,
                         flood_limits=server.flood_limits)
        self.refuse_streams_ourselves()  # _start_call refuses excess streams
        self.server = server
        self.calls: dict[int, ServerCall] = {}  # guarded by self.lock
        self._starting = None
        # Request heads seen before, with their handlers (loop thread; see _start_call).
        self._known: dict[tuple[tuple[bytes, bytes], ...],
                          tuple[RequestHead, RpcMethodHandler]] = {}
        self._known_bytes = 0
        # The peer's preface and first SETTINGS arrived (written by the loop thread only;
        # the timer's unlocked read of a stale False closes at most a just-ready connection).
        self.ready = False
        self._handshake_timer: TimerHandle | None = None
        # The client's preface is known to be waiting (sniffed): read it on attaching.
        self.preface_waiting = False

    def attached(self) -> None:
        if self.preface_waiting and self.tls is None:
            # Read the client's preface and SETTINGS now, before our SETTINGS go out:
            # they leave in one write with the ACK of the client's (and a first request
            # sent along with the preface is served at once).
            self._on_readable()  # flushes what it made h2 say
            if self.closed:
                return
        super().attached()  # flushes what is left, if anything (no read: our SETTINGS)

    def watch_handshake(self, timeout: float) -> None:
        """Close the connection unless TLS, the preface and the peer's first SETTINGS
        are done within ``timeout`` s: a silent socket must not stay for free."""
        self._handshake_timer = self.server.timer.call_later(timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        if not self.ready and not self.closed:
            log.info("closing connection from %s: no HTTP/2 handshake within %gs",
                     self.peer, self.server.handshake_timeout)
            self.close(UnavailableError(StatusCode.UNAVAILABLE, "handshake timeout"))

    # -- the client's events, as plain values (loop thread) ----------------------------

    def on_request(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                   reset_in_read: bool) -> None:
        stream = ServerStream(stream_id)
        if reset_in_read:  # never started (see ServerStream: IDLE + PEER_RESET)
            stream.peer_reset(CancelledError(StatusCode.CANCELLED, "Cancelled by the client"))
            return
        self._start_call(stream, headers)

    def request_inbox(self, stream_id: int
                      ) -> tuple[Inbox, Callable[[RpcError], object]] | None:
        call = self.calls.get(stream_id)
        if call is None:  # finished by us, or refused
            return None
        call.stream.receive_data()
        return call.inbox, call.bad_input

    def on_request_end(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        with self.lock_mutex:  # (the lock without its condition: nobody to notify)
            call.stream.peer_end()
        if not call.inbox.decoder.at_boundary():
            call.bad_input(RpcError(StatusCode.INTERNAL, "request stream ended inside a message"))
        else:
            call.inbox.end()

    def on_request_reset(self, stream_id: int, error_code: int) -> None:
        call = self.calls.get(stream_id)
        if call is not None:
            code = status_from_rst(error_code)
            call.reset_by_peer(error_for(code, "Cancelled by the client"
                                         if code is StatusCode.CANCELLED else "stream reset"))

    def on_client_settings(self) -> None:
        if not self.ready:
            self.ready = True
            if self._handshake_timer is not None:
                self._handshake_timer.cancel()

    def on_client_goaway(self, error_code: int) -> None:
        # A client's GOAWAY only stops new streams; its calls end with the socket. An
        # error code means the client gave up on all of them.
        if error_code:
            self._cancel_all(UnavailableError(
                StatusCode.UNAVAILABLE, f"client sent GOAWAY (error code {error_code})"))

    # -- starting calls --------------------------------------------------------------

    def _reject(self, stream: ServerStream, error: RpcError, http_status: int = 200,
                content_type: str = "application/grpc",
                extra: list[tuple[str, str]] | None = None) -> None:
        send = stream.reject(error.code, error.details, http_status=http_status,
                             content_type=content_type, metadata=extra or ())
        self._send_rejection(stream, send)

    def _send_rejection(self, stream: ServerStream, send: Send) -> None:
        with self.lock:
            try:
                self.push_stream_frames(stream.stream_id, send.headers, send.end_stream,
                                        send.reset)
            except RpcError:
                pass  # reset by the peer in the same read: nothing to answer

    def _start_call(self, stream: ServerStream, headers: list[tuple[bytes, bytes]]) -> None:
        server = self.server
        stream_id = stream.stream_id
        # A client repeats the same header block call after call (the same field
        # objects, from hpack_cache): its parsed head and handler are reused.
        key = tuple(headers)
        known = self._known.get(key)
        if known is None:
            if is_plain_http(headers):  # not gRPC: a curl-style unary call (http_unary.py)
                server.http.start_h2_stream(self, stream, headers)
                return
            try:
                head = parse_request_headers(headers)
            except RequestRejected as exc:
                self._reject(stream, exc, exc.http_status)
                return
        else:
            head, handler = known
        if server.stopping or self.over_stream_limit(stream_id, server.max_concurrent_streams):
            # Over our SETTINGS_MAX_CONCURRENT_STREAMS (a peer may open streams before
            # it has read them): a stream error, RFC 9113 §5.1.2.
            self._send_rejection(stream, stream.refuse())
            return
        if known is None:
            found, miss = server.lookup(head)
            json = head.content_type.startswith("application/grpc+json")
            if found is not None and json:
                found = server.http.grpc_json_handler(head, found)  # JSON payloads
                miss = f"{head.path} takes no JSON: its message types are unknown"
            if found is None:
                self._reject(stream, RpcError(StatusCode.UNIMPLEMENTED, miss),
                             content_type=head.content_type)
                return
            handler = found
            encoding = head.encoding
            if encoding is not None and encoding != "identity" and get_codec(encoding) is None:
                self._reject(stream, unsupported_encoding_error(encoding),
                             content_type=head.content_type,
                             extra=[("grpc-accept-encoding", accept_encoding_header())])
                return
            if head.timeout is None and not json and server.fixed_handler(head):
                self._remember(key, head, handler)
        if len(self.calls) >= server.max_calls_per_connection:
            self._reject(stream, RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"too many calls on one connection ({len(self.calls)} running; "
                f"max_calls_per_connection={server.max_calls_per_connection})"),
                content_type=head.content_type)
            return
        if not server.admit():
            self._reject(stream, RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"server is at capacity ({server.max_workers} running calls and "
                f"{server.max_pending_calls} waiting)"), content_type=head.content_type)
            return
        stream.accept(head.content_type)  # not shared with other threads yet
        try:
            call = ServerCall(server, self, stream, head, handler)
        except Exception:
            server.call_finished()  # undo admit()
            raise
        self.launch(call)

    def _remember(self, key: tuple[tuple[bytes, bytes], ...], head: RequestHead,
                  handler: RpcMethodHandler) -> None:
        """Keep a head that may come again. Bounded, as the peer chooses what we keep:
        a block over ``_KNOWN_BLOCK_BYTES`` is not kept, and the table is emptied when
        it would pass ``_KNOWN_ENTRIES`` or ``_KNOWN_BYTES``. (A head with a timeout is
        never kept: the value changes call after call.)"""
        cost = sum(len(name) + len(value) + 32 for name, value in key)
        if cost > _KNOWN_BLOCK_BYTES:
            return
        if len(self._known) >= _KNOWN_ENTRIES or self._known_bytes + cost > _KNOWN_BYTES:
            self._known.clear()
            self._known_bytes = 0
        self._known[key] = (head, handler)
        self._known_bytes += cost

    def launch(self, call: ServerCall) -> None:
        """Register an admitted, accepted call and hand it to a worker (loop thread)."""
        with self.lock_mutex:  # (the lock without its condition: nobody to notify)
            # A flush while handling this read may have found the socket dead and
            # ended the connection (cancelling its calls): this one must not outlive it.
            registered = not self.closed
            if registered:
                self.calls[call.stream_id] = call
            else:
                call.stream.lost(self.error or UnavailableError(StatusCode.UNAVAILABLE,
                                                                "closed"))
        if not registered:
            if call.timer is not None:
                call.timer.cancel()  # it would hold the call until its deadline
            self.server.call_finished()  # undo admit()
            return
        starting = self._starting
        if starting is not None:  # handling a read: submitted at its end (handle_events)
            starting.append(call)
        else:
            self.server.submit(call)

    def drain(self) -> None:
        """Graceful stop, step one: GOAWAY naming the last stream we will serve."""
        self.send_goaway(self.highest_inbound_stream_id())

    def call_done(self, call: ServerCall) -> None:
        with self.lock_mutex:
            self.calls.pop(call.stream_id, None)
        # Credit held back for requests the handler never read is owed on the whole
        # connection: without it the connection's window would shrink for good.
        credit = call.inbox.abandon()
        if credit:
            try:
                self.acknowledge(call.stream_id, credit)
            except RpcError:
                pass
        self.server.call_finished(call)

    def _cancel_all(self, error: RpcError) -> None:
        with self.lock:
            calls = list(self.calls.values())
        for call in calls:
            call.cancel(error)

    def connection_lost(self, error: RpcError) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._cancel_all(error)
        self.server.connection_closed(self)

    def cancel_remaining(self) -> None:
        """Graceful stop, last step: RST_STREAM(CANCEL) whatever is still running."""
        with self.lock:
            calls = list(self.calls.values())
        for call in calls:
            call.cancel_locally()


class _Listener:
    """The listening socket, read by the server's loop."""

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def on_ready(self, readable: bool, writable: bool) -> None:
        for _ in range(64):  # a bounded batch: the loop has connections to read too
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.sock.fileno() != -1:
                    log.warning("accept failed: %s", exc)
                return
            self.server.accept(sock)

    def close(self) -> None:
        assert self.server._loop is not None
        self.server._loop.unregister(self)
        self.sock.close()


class Server:
    """Serves services over Triple: ``start()`` returns at once, serving goes on in
    threads until ``stop()``.

    ``max_workers`` handlers run at once, one thread each; ``max_pending_calls`` more
    may wait for a thread (``None``: no bound). A call beyond both is refused at once
    with RESOURCE_EXHAUSTED rather than queued without bound. A call stops counting
    when its status is sent, so a client's next call is not refused while the last
    one's worker finishes (it waits those microseconds for the thread instead).

    ``processes=N`` serves the port from N processes, this one included, so the
    server uses N cores (processes.py, docs/processes.md).
    """

    def __init__(self, service_config: ServiceConfig, *,
                 max_workers: int = DEFAULT_MAX_WORKERS,
                 max_pending_calls: int | None = None,
                 max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS,
                 max_receive_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 max_send_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 compression: str | None = None,
                 keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
                 keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None,
                 handshake_timeout: float = 10.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_calls_per_connection: int | None = None,
                 send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
                 max_send_buffer: int = DEFAULT_MAX_SEND_BUFFER,
                 max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE,
                 worker_idle_timeout: float | None = DEFAULT_WORKER_IDLE_TIMEOUT,
                 min_workers: int = 0,
                 flood_limits: FloodLimits | None = None,
                 reflection: bool = False,
                 interceptors: Sequence[ServerInterceptor] = (),
                 processes: int = 1) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        check_processes(processes)
        # Serving processes, this one included (processes.py); >1 forks in start().
        self.processes = processes
        self._processes: ProcessGroup | None = None
        self.config = service_config
        # Around every method of every service added (dubbo/interceptors), first outermost.
        self.interceptors = tuple(interceptors)
        # service name -> {(group, version): handler}; filled before start(), read-only after.
        self.services: dict[str, dict[tuple[str | None, str | None], RpcServiceHandler]] = {}
        if service_config.service_handler is not None:  # None: grpcio-style, added later
            self.add_service(service_config.service_handler, group=service_config.group,
                             version=service_config.version)
        # Served besides self.services (and never registered): grpc.health.v1.Health,
        # and with reflection=True grpc.reflection.v1/v1alpha. Read-only after start().
        self.health = HealthServicer() if processes == 1 else SharedHealth()
        health = self.health.service_handler()
        self.builtin_services = {health.service_name: health}
        if reflection:
            self.reflection: ReflectionServicer | None = ReflectionServicer(self._all_services)
            for handler in self.reflection.service_handlers():
                self.builtin_services[handler.service_name] = handler
        else:
            self.reflection = None
        self.max_workers = max_workers
        self.max_pending_calls = max_pending_calls
        self.max_concurrent_streams = max_concurrent_streams
        self.max_receive_message_size = max_receive_message_size
        self.max_send_message_size = max_send_message_size
        self.compression = codec_name(compression) or service_config.compression
        resolve(self.compression)  # fail at construction on an unknown name
        self.keepalive_time = keepalive_time
        self.keepalive_timeout = keepalive_timeout
        # TLS with ALPN h2 (dubbo.tls.server_context makes one); None: plaintext h2c.
        self.ssl_context = None if ssl_context is None else tls_prepare(ssl_context)
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        # One connection may not take every worker: other clients must still be served.
        # By default half the workers (running and waiting calls count); a pool under
        # 16 workers is a deliberate choice, left whole to whichever client uses it.
        if max_calls_per_connection is None:
            max_calls_per_connection = max_workers // 2 if max_workers >= 16 else 2**31
        self.max_calls_per_connection = max_calls_per_connection
        self.send_timeout = send_timeout
        self.max_send_buffer = max_send_buffer
        self.max_header_list_size = max_header_list_size
        self.worker_idle_timeout = worker_idle_timeout
        self.min_workers = min_workers
        self.flood_limits = flood_limits or FloodLimits()
        # Written under _lock; read unlocked by the loop (_start_call) and the timer: a
        # stale False admits one more call, which stop()'s cancel_remaining() ends.
        self.stopping = False
        self.timer = Scheduler("dubbo-server-timer")
        # Runs add_callback functions for calls that ended on the I/O or timer thread.
        self.callback_pool = WorkerPool(CALLBACK_THREADS, idle_timeout=5.0,
                                        name="dubbo-callbacks")
        # Guards _connections, _active, _ended, stopping. A plain lock: taken twice per
        # call. Its condition wakes stop(), the one waiter; it is notified only once
        # `stopping` is set (under the lock, before stop() waits), so a call's end
        # costs no notify while serving.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._connections: set[ServerConnection] = set()
        self._active = 0  # calls admitted and not yet finished (running or waiting)
        # Of them, those that still count against the bound: their status is not sent.
        self._admitted = 0
        self._ended = 0  # calls and connections that ended: memory may be free to return
        self._ended_at_trim = 0  # timer thread only
        self._quiet_trims = 0  # trims left after the last change (timer thread only)
        self._listener: _Listener | None = None
        self._loop: IOLoop | None = None
        self._pool: WorkerPool | None = None
        self._stopped = threading.Event()
        self.port: int = service_config.port
        self.http = HttpUnary(self)  # JSON, HTTP/1.1 and curl-style calls (http_unary.py)

    def add_service(self, service: RpcServiceHandler, group: str | None = None,
                    version: str | None = None) -> None:
        """Serve one more service (or another group/version of one); before start()."""
        if self.interceptors:
            from ..interceptors.server import intercept_service
            service = intercept_service(service, self.interceptors)
        self.services.setdefault(service.service_name, {})[(group or None, version or None)] = \
            service

    # grpcio GenericRpcHandlers whose methods are known only per call; set before start().
    generic_handlers: tuple[Any, ...] = ()

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[Any]) -> None:
        """grpcio's ``Server.add_generic_rpc_handlers`` (what grpcio-tools'
        ``add_XServicer_to_server`` calls), so generated servicers run unchanged;
        before start()."""
        grpc_compat.add_generic_rpc_handlers(self, generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: Mapping[str, Any]) -> None:
        """grpcio's ``Server.add_registered_method_handlers``: ``method_handlers`` maps
        method names to ``grpc.*_rpc_method_handler(...)``; before start()."""
        self.add_service(grpc_compat.service_handler(service_name, method_handlers))

    def fixed_handler(self, head: RequestHead) -> bool:
        """True if ``lookup`` answers ``head``'s path, group and version with the same
        handler every time (not grpcio's generic handlers, asked call by call)."""
        if head.service in self.services:
            return True
        builtin = self.builtin_services.get(head.service)
        return builtin is not None and head.method in builtin.method_handlers

    def lookup(self, head: RequestHead) -> tuple[RpcMethodHandler | None, str]:
        """The handler for a request, or ``None`` and why.

        Routing follows Java's TriplePathResolver: group and version come from the
        ``tri-service-*`` headers; a request naming no version (any plain gRPC client)
        gets version 1.0.0, else the only provider of its group (or of the service).
        An explicit version that is not served is UNIMPLEMENTED (Java would fall back;
        we route strictly, as the registry's consumers match strictly).
        """
        providers = self.services.get(head.service)
        if providers is None:  # a built-in service, whatever group or version is asked
            builtin = self.builtin_services.get(head.service)
            handler = None if builtin is None else builtin.method_handlers.get(head.method)
            if handler is None and self.generic_handlers:  # grpcio's per-call handlers
                handler = grpc_compat.generic_lookup(self.generic_handlers, head)
                if handler is not None and self.interceptors:
                    from ..interceptors.server import intercept_handler
                    handler = intercept_handler(handler, head.service, self.interceptors)
            return handler, "" if handler else f"Method not found: {head.path}"
        group = (head.headers.get(b"tri-service-group") or b"").decode("latin-1") or None
        version = (head.headers.get(b"tri-service-version") or b"").decode("latin-1") or None
        service = providers.get((group, version))
        if service is None and version is None:
            # Java's RESOLVE_FALLBACK_TO_DEFAULT: no version asked means 1.0.0; then the
            # sole provider of the group (of the service, if no group was named either),
            # so plain gRPC clients reach the service.
            service = providers.get((group, "1.0.0"))
            if service is None:
                candidates = [svc for (g, _v), svc in providers.items()
                              if group is None or g == group]
                service = candidates[0] if len(candidates) == 1 else None
        if service is None:
            return None, (f"no provider of {head.service} for group={group or ''} "
                          f"version={version or ''}")
        handler = service.method_handlers.get(head.method)
        return handler, "" if handler else f"Method not found: {head.path}"

    def _all_services(self) -> list[RpcServiceHandler]:
        """Every service handler served, the user's and the built-in ones."""
        return [service for providers in self.services.values()
                for service in providers.values()] + list(self.builtin_services.values())

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Server:
        if self._listener is not None:
            raise RuntimeError("server already started")
        host = self.config.host
        infos = socket.getaddrinfo(host, self.config.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.processes > 1 and reuse_port():
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(512)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            # The same errno (EADDRINUSE stays EADDRINUSE), with the address it is about.
            raise OSError(exc.errno, f"cannot serve on {host}:{self.config.port}: "
                                     f"{exc.strerror or exc}") from exc
        self.port = sock.getsockname()[1]
        if self.processes > 1:  # before any thread of ours starts; children never return
            try:
                self._processes = ProcessGroup.spawn(self, sock, self.processes - 1)
            except BaseException:
                sock.close()
                raise
        self._serve(sock)
        return self

    @property
    def pids(self) -> list[int]:
        """The ids of the processes serving (``processes=N``), this one first."""
        group = self._processes
        return [os.getpid(), *(group.pids if group is not None else ())]

    def _serve(self, sock: socket.socket) -> None:
        """Serve the bound ``sock``: the threads of one serving process."""
        host = self.config.host
        limit_malloc_arenas()  # before our threads start (memory.py)
        self._pool = WorkerPool(self.max_workers, min_workers=self.min_workers,
                                idle_timeout=self.worker_idle_timeout, name="dubbo-worker")
        self._loop = IOLoop("dubbo-server-io")
        self._listener = _Listener(self, sock)
        self.health.set_default(list(self.services))  # before the first call can come
        self._loop.start()
        self._loop.call_soon(lambda: self._loop.register(self._listener))  # type: ignore
        self.timer.call_later(TRIM_INTERVAL, self._trim_memory)
        signals.install(self)
        log.info("serving %s on %s:%d", ", ".join(self.services), host, self.port)

    def accept(self, sock: socket.socket, sniffed: bool = False) -> None:
        """A new connection (loop thread): refuse it past max_connections, else read it."""
        assert self._loop is not None
        with self._lock:
            refuse = self.stopping or len(self._connections) + \
                self.http.connection_count() >= self.max_connections
        if refuse:
            if not self.stopping:
                log.warning("refusing a connection: %d open (max_connections)",
                            self.max_connections)
            sock.close()
            return
        if self.ssl_context is None and not sniffed:  # HTTP/1.1 or HTTP/2? (http1.py)
            self.http.sniff(sock)
            return
        try:
            tls = None if self.ssl_context is None else \
                TLSLayer(self.ssl_context, server_side=True)
            connection = ServerConnection(self, sock, self._loop, tls)
        except Exception:
            log.exception("could not set up a connection")
            sock.close()
            return
        with self._lock:
            self._connections.add(connection)
        connection.watch_handshake(self.handshake_timeout)
        connection.preface_waiting = sniffed  # the sniffer saw it, unread
        connection.join_loop()  # on the loop thread already
        if self.keepalive_time:
            connection.start_keepalive(self.timer, self.keepalive_time,
                                       self.keepalive_timeout, lambda: True)

    def _adopt(self, sock: socket.socket) -> None:
        """Serve an already-connected socket as if accepted (tests/memory_pair.py: one
        end of a socketpair, so protocol tests run without TCP)."""
        assert self._loop is not None, "start() first"
        if not self._loop.call_soon(lambda: self.accept(sock)):
            sock.close()  # stopped meanwhile

    def admit(self) -> bool:
        """Count a new call in, unless the workers and the waiting room are full."""
        with self._lock:
            if self.max_pending_calls is not None and \
                    self._admitted >= self.max_workers + self.max_pending_calls:
                return False
            self._active += 1
            self._admitted += 1
        return True

    def release_slot(self, call: ServerCall) -> None:
        """A call's final status is about to leave: admit() may count its place as
        free, though its worker still has to finish (the pool queues a call admitted
        meanwhile for the moment that takes)."""
        with self._lock:
            self._release_slot_locked(call)

    def _release_slot_locked(self, call: ServerCall) -> None:
        if call.holds_slot:
            call.holds_slot = False
            self._admitted -= 1

    def submit(self, call: PoolTask) -> None:
        assert self._pool is not None
        try:
            self._pool.submit(call.run)
        except RuntimeError:  # pool shut down under us
            self.call_finished()
            call.cancel(UnavailableError(StatusCode.UNAVAILABLE, "server is stopping"))

    def call_finished(self, call: ServerCall | None = None) -> None:
        """A call admitted ended (or ``admit()`` is undone, ``call`` None)."""
        with self._lock:
            self._active -= 1
            if call is None:
                self._admitted -= 1
            else:
                self._release_slot_locked(call)
            self._ended += 1
            if self.stopping:
                self._changed.notify_all()

    def connection_closed(self, connection: ServerConnection) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._ended += 1
            if self.stopping:
                self._changed.notify_all()

    def _trim_memory(self) -> None:
        """Timer: once calls or connections have ended, hand their freed memory back to
        the OS, so a burst (or an attack) leaves no lasting footprint."""
        if self.stopping:
            return
        ended = self._ended
        changed = ended != self._ended_at_trim
        # Memory a call or connection held may be freed just after it counts as ended
        # (its worker or reader lets go a moment later, later still on a loaded
        # machine): trim again on the first QUIET_TRIMS quiet ticks after a change, or
        # that last part stays with the process.
        if changed or self._quiet_trims:
            if not changed and self._quiet_trims == QUIET_TRIMS:
                # The first quiet tick: what only the cycle collector frees (an error's
                # traceback holding a reply being sent) goes now, not at some later
                # allocation an idle server may never make. Never while calls end.
                gc.collect()
            self._quiet_trims = QUIET_TRIMS if changed else self._quiet_trims - 1
            self._ended_at_trim = ended
            release_free_memory()
        self.timer.call_later(TRIM_INTERVAL, self._trim_memory)

    def stop(self, grace: float | None = 5.0) -> None:
        """Stop serving, gracefully: GOAWAY to every client so no new calls start,
        in-flight calls get ``grace`` seconds to finish (``None``: as long as they
        take), the rest are cancelled (RST_STREAM CANCEL), then every socket closes."""
        with self._lock:
            if self.stopping or self._listener is None:
                return
            self.stopping = True
            connections = list(self._connections)
        self.health.enter_graceful_shutdown()  # before GOAWAY: probes see it first
        if self._processes is not None:  # the other processes drain meanwhile
            self._processes.stop(grace)
        assert self._loop is not None and self._listener is not None
        listener = self._listener
        self._loop.call_soon(listener.close)
        for connection in connections:
            connection.drain()
        deadline = Deadline.after(grace)
        with self._lock:
            while self._active:
                if deadline is not None and deadline.expired():
                    break
                self._changed.wait(None if deadline is None else deadline.remaining())
            connections = list(self._connections)
        self.http.close_all()  # HTTP/1.1 connections, sockets not sniffed yet
        for connection in connections:
            connection.cancel_remaining()
            connection.close(UnavailableError(StatusCode.UNAVAILABLE, "server stopped"))
        for connection in connections:
            connection.join(5.0)
        self._loop.stop()
        self.timer.close()
        self.callback_pool.shutdown(wait=True, cancel_pending=False, timeout=5.0)
        assert self._pool is not None
        # Handlers were cancelled; one that ignores it must not hang stop() forever.
        with self._lock:
            self._changed.wait_for(lambda: self._active == 0, timeout=5.0)
            stuck = self._active
        for task in self._pool.shutdown(wait=stuck == 0):  # calls that never got a worker
            call = getattr(task, "__self__", None)
            if isinstance(call, PoolTask):
                self.call_finished()
                call.cancel(UnavailableError(StatusCode.UNAVAILABLE, "server stopped"))
        if stuck:
            log.warning("%d handler(s) still running after stop()", stuck)
        if self._processes is not None:
            self._processes.join(grace)
        signals.release(self)
        self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until ``stop()`` has finished; True unless ``timeout`` ran out first.

        Ctrl-C (or SIGTERM, see ``signals``) while waiting stops the server gracefully
        first: Ctrl-C then returns True, SIGTERM goes on to exit the program.
        """
        try:
            return self._stopped.wait(timeout)
        except (KeyboardInterrupt, SystemExit) as exc:
            log.info("stopping on %s", "Ctrl-C" if isinstance(exc, KeyboardInterrupt)
                     else "SIGTERM")
            self.stop()
            if isinstance(exc, SystemExit):
                raise
            return True

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
