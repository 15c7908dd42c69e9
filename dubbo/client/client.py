"""The Triple client: one multiplexed HTTP/2 connection per target, a reader thread per
connection feeding each call's inbox, and a sender thread per request-streaming call."""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..call.client_stream import ClientStream, Input, Send, Step
from ..cluster.loadbalance import load_balance
from ..cluster.policy import ClusterPolicy
from ..configs import ApplicationConfig, ReferenceConfig
from ..registry.url import DEFAULT_WEIGHT
from ..status import (
    CancelledError,
    DeadlineExceededError,
    RpcError,
    StatusCode,
    UnavailableError,
    error_for,
)
from ..transport import (
    FAST_PRODUCER,
    H2Transport,
    Inbox,
    MessageWriter,
    Payload,
    payload_size,
    peer_name,
)
from ..transport.heap import keep_heap_for
from ..transport.ioloop import IOLoop
from ..transport.timer import Scheduler
from ..transport.tls import TLSLayer
from ..transport.tls import prepare as tls_prepare
from ..wire.compression import Codec, accept_encoding_header, codec_name, get_codec, resolve
from ..wire.deadline import Deadline, encode_timeout
from ..wire.framing import DEFAULT_MAX_MESSAGE_SIZE, frame_message
from ..wire.metadata import (
    MetadataLike,
    ResponseStatus,
    encode_metadata,
    request_headers,
)
from .endpoint import Endpoint

if TYPE_CHECKING:  # pragma: no cover
    from ..interceptors.base import ClientInterceptor

__all__ = ["Client", "Call", "ResponseIterator"]

log = logging.getLogger("dubbo.client")

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]
_M = TypeVar("_M", bound="_Method")


class ClientCall:
    """The I/O shell of one client stream around its ``ClientStream`` state machine.

    Lock: ``transport.lock`` guards ``stream`` (every transition is taken under it),
    ``headers_event`` and ``requests_taken``. The reader thread feeds ``inbox``; its
    consumer is the caller's thread. ``ended`` (calls with one response) is a lock held
    until the call is over: ``apply_end`` releases it last, so the caller waits once and
    is woken once, when the reply, the status and the stream's release are all done.
    """

    __slots__ = ("transport", "stream_id", "stream", "inbox", "deadline", "headers_event",
                 "writer", "reading", "endpoint", "requests_taken", "ended")

    def __init__(self, transport: ClientConnection, deadline: Deadline | None,
                 max_receive_message_size: int | None, endpoint: Endpoint | None = None) -> None:
        self.transport = transport
        # Counted in its provider's active calls while its stream is open (balancers).
        self.endpoint = endpoint
        self.stream_id = 0
        self.stream = ClientStream()
        self.inbox = Inbox(max_receive_message_size, on_large=keep_heap_for)
        self.deadline = deadline
        self.headers_event: threading.Event | None = None  # made by a waiter, if any
        self.writer: MessageWriter | None = None  # request-streaming calls only
        # The caller waits for a reply: requests must not be held. No lock: one writer
        # (the caller, in read()), and see read() for why a stale read is harmless.
        self.reading = False
        # The sender took a request from the caller's iterator: the call can no longer
        # be tried again elsewhere (set only while the stream is live).
        self.requests_taken = False
        self.ended: threading.Lock | None = None  # see the class docstring

    def wait_ended(self) -> None:
        """Wait (to the deadline) for the end of a call with one response, then its
        messages and status are all in the inbox: ``read`` no longer waits. A call over
        its deadline is ended with DEADLINE_EXCEEDED, as ``read`` would."""
        ended = self.ended
        if ended is None:  # not a one-response call, or already over
            return
        deadline = self.deadline
        if not ended.acquire(True, -1 if deadline is None else deadline.remaining()):
            self.end_locally(DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                                   "Deadline Exceeded"), Input.DEADLINE)

    @property
    def status(self) -> ResponseStatus | None:
        """The final status the server (or the connection) gave, if any."""
        return self.stream.status

    @property
    def initial_metadata(self) -> list[tuple[str, str | bytes]] | None:
        return self.stream.initial_metadata

    @property
    def local_error(self) -> RpcError | None:
        """The error a local end (cancel, deadline, broken response) left."""
        return self.stream.error

    def end_locally(self, error: RpcError, event: Input | None = None) -> bool:
        """End the call from our side with ``error``: RST_STREAM(CANCEL), fail every
        waiter. False if it was already over (a no-op: the answer won the race)."""
        transport = self.transport
        with transport.lock:
            step = self.stream.end_locally(error, event)
            if step.final is None:
                return False
            transport.lock.notify_all()  # senders waiting for window must stop
        transport.apply_end(self, step)
        return True

    def data_failed(self, error: RpcError) -> None:
        """The response's data is broken (framing, size, compression)."""
        self.end_locally(error, Input.LOCAL_ERROR)

    def half_closed(self) -> None:
        """The request's END_STREAM went out."""
        with self.transport.lock_mutex:
            self.stream.half_close()

    def take_requests(self) -> bool:
        """The sender is about to take a request from the caller's iterator: False
        if the call is over (then it must not)."""
        with self.transport.lock:
            if self.stream.done:
                return False
            self.requests_taken = True
            return True

    def never_processed(self) -> bool:
        """The call ended unprocessed by the server (GOAWAY below it, REFUSED_STREAM)
        and nothing of the caller's was consumed: it counts as not sent."""
        return self.stream.unprocessed and not self.requests_taken

    def headers_arrived(self) -> None:
        """Wake a thread waiting in ``wait_headers`` (most calls have none: an Event
        per call would cost more than the rest of a small unary call's bookkeeping)."""
        event = self.headers_event
        if event is not None:
            event.set()

    def wait_headers(self) -> None:
        stream = self.stream
        if stream.initial_metadata is not None or stream.done:
            return
        with self.transport.lock:
            if self.headers_event is None:
                self.headers_event = threading.Event()
            event = self.headers_event
        # Re-check after publishing the event: the reader sets the field, then looks
        # for an event, so one of the two sides always sees the other.
        if stream.initial_metadata is None and not stream.done:
            event.wait(None if self.deadline is None else self.deadline.remaining())

    def read(self) -> bytes | None:
        """The next response message, ``None`` at a clean end; raises the call's error."""
        writer = self.writer
        if writer is not None and writer.urgent is not None:
            # About to wait for the server: it must see every request made so far.
            # ``reading`` first, so the sender either sees it or left something here.
            self.reading = True
            if writer.pending and not self.inbox.ready():
                try:
                    writer.flush()
                except RpcError:
                    pass  # the stream is over; the inbox says why
        try:
            message, credit = self.inbox.get(self.deadline)
        except DeadlineExceededError as exc:
            self.end_locally(exc, Input.DEADLINE)
            raise self.stream.error or exc from None
        except RpcError:
            if self.stream.error is not None:
                raise self.stream.error from None
            raise
        finally:
            self.reading = False
        if credit:
            self.transport.acknowledge(self.stream_id, credit)
        if message is None:
            status = self.stream.status
            if status is None:  # pragma: no cover - inbox ends only after a status
                raise error_for(StatusCode.INTERNAL, "stream ended without status")
            if status.code is not StatusCode.OK:
                code = status.code
                if code is StatusCode.CANCELLED and self.deadline is not None \
                        and self.deadline.expired():
                    code = StatusCode.DEADLINE_EXCEEDED  # grpc "Client Cancellation"
                raise error_for(code, status.details, status.metadata,
                                initial_metadata=self.stream.initial_metadata)
        return message


class ClientConnection(H2Transport):
    """A client connection, read by an I/O loop thread of its own. It connects without
    blocking anyone: each caller waits for it (in ``open_stream``) only as long as its
    own deadline allows. Lock: ``lock`` (the transport's) also guards ``calls``,
    ``draining``, ``connected`` and each call's ``ClientStream`` state machine.

    h2's events reach it as plain values, through the ``client_*`` hooks that
    ``H2Transport.dispatch_client_events`` calls (its ``handle_events``)."""

    def __init__(self, address: tuple[Any, ...], family: int,
                 on_idle: Callable[[ClientConnection], None],
                 on_connect_failed: Callable[[ClientConnection, RpcError], None],
                 tls: TLSLayer | None = None, connect_timeout: float = 5.0,
                 sock: socket.socket | None = None, defer_loop: bool = False) -> None:
        # ``sock``: already connected (tests/memory_pair.py runs over a socketpair).
        # ``defer_loop``: the caller sends a first request that needs no reply to go out
        # (it fits the initial windows) and calls ``start_loop()`` once it is on its way.
        connected = sock is not None
        sock = socket.socket(family, socket.SOCK_STREAM) if sock is None else sock
        loop = IOLoop("dubbo-client-conn")
        try:
            super().__init__(sock, client_side=True, loop=loop, tls=tls)
            self.address = address
            self.peer = peer_name(family, address)
            self.calls: dict[int, ClientCall] = {}
            self.draining = False  # GOAWAY received: no new streams here
            self.connected = False  # TCP (and TLS) up: streams may start
            # Callers waiting in open_stream for a stream slot: a stream that ends
            # wakes them only if there are any (lock).
            self._slot_waiters = 0
            self._on_idle = on_idle
            self._on_connect_failed = on_connect_failed
            self._tcp_up = False  # the TCP connect is done (its result was looked at)
            error = 0 if connected else sock.connect_ex(address)
            if error in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                # On loopback and fast networks the connect is done at once: then the
                # preface goes out from this thread, with no hand-over to the loop.
                error = 0 if select.select([], [sock], [], 0)[1] else -1
                if error == 0:
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error > 0:
                raise OSError(error, os.strerror(error))
            if error == 0:
                self._tcp_up = True
                if tls is None:
                    self.handshake_done()
                    self.flush()  # the connection preface
        except BaseException:
            sock.close()
            loop.stop()
            raise
        if not self.connected:
            loop.set_alarm(connect_timeout, lambda: self.connect_expired(connect_timeout))
        # Registered before its loop thread runs (nobody else uses the selector yet):
        # no wake-up and no hand-over before the first reply can be read.
        self.join_loop()
        if defer_loop and self.connected:
            # Up at once (plaintext): the thread starts after the first request went
            # out (start_loop), or as soon as anything asks the loop for work (close).
            loop.start_later()
        else:
            loop.start()

    def start_loop(self) -> None:
        """Start reading, if ``defer_loop`` left that for now (any thread, any time)."""
        self.loop.start_deferred()

    def wants_connect(self) -> bool:
        return not self._tcp_up  # its first writability says the connect is done

    def attached(self) -> None:
        if self._tcp_up and self.tls is not None:
            self._handshake(b"")

    def _on_writable(self) -> None:
        if self._tcp_connected_once():
            self._flush_from_loop()

    def _tcp_connected_once(self) -> bool:
        """Loop thread. The first writability ends the connect: start TLS or h2."""
        if self._tcp_up:
            return True
        self._tcp_up = True
        error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._terminate(UnavailableError(
                StatusCode.UNAVAILABLE, f"failed to connect to {self._where()}: "
                f"[Errno {error}] {os.strerror(error)}"))
            return False
        if self.tls is not None:
            self._handshake(b"")
        else:
            self.handshake_done()
            self._flush_from_loop()
        return False

    def handshake_done(self) -> None:
        self.loop.cancel_alarm()
        with self.lock:
            self.connected = True
            self.lock.notify_all()

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def connect_expired(self, timeout: float) -> None:
        """Timer: the connect (or TLS handshake) took longer than connect_timeout."""
        if not self.connected and not self.closed:
            self.close(UnavailableError(
                StatusCode.UNAVAILABLE,
                f"failed to connect to {self._where()}: timed out after {timeout:g}s"))

    def open_stream(self, call: ClientCall, headers: list[tuple[str, str]],
                    end_stream: bool = False, data: bytes | None = None) -> bool:
        """Start a stream for ``call``, waiting for a free slot under the peer's
        MAX_CONCURRENT_STREAMS. The headers go out with the caller's next flush.

        ``data``: the whole request, queued behind the headers with END_STREAM in the
        same lock hold when it fits now (``push_first_data``); True if it was (the
        request is then half-closed), False if the caller must send it."""
        with self.lock_mutex:  # the lock under ``lock`` (its Condition's own waits work)
            try:
                while True:
                    if self.closed:
                        self.check_open()
                    if self.draining:
                        raise UnavailableError(StatusCode.UNAVAILABLE,
                                               "connection is draining")
                    # len(calls), not h2's count of open streams, which walks them all.
                    if self.connected and len(self.calls) < self.peer_max_concurrent_streams():
                        break
                    if call.deadline is not None:
                        if call.deadline.expired():
                            raise DeadlineExceededError(
                                StatusCode.DEADLINE_EXCEEDED,
                                "Deadline Exceeded waiting for a stream" if self.connected
                                else f"Deadline Exceeded while connecting to {self._where()}")
                        wait = call.deadline.remaining()
                    else:
                        wait = None
                    self._slot_waiters += 1
                    try:
                        self.lock.wait(wait)
                    finally:
                        self._slot_waiters -= 1
                stream_id = self.start_stream(headers, end_stream)
            except RpcError as exc:  # never started: nothing to reset, nobody to wake
                if isinstance(exc, DeadlineExceededError):
                    call.stream.end_locally(exc, Input.DEADLINE)
                else:
                    call.stream.connection_lost(exc.code, exc.details)
                raise
            call.stream.start()
            sent = data is not None and self.push_first_data(stream_id, data)
            if end_stream or sent:
                call.stream.half_close()
            call.stream_id = stream_id
            self.calls[stream_id] = call
            if call.endpoint is not None:
                call.endpoint.call_started()
        return sent

    def apply_end(self, call: ClientCall, step: Step, release: bool = True) -> None:
        """``step`` ended ``call`` (taken under the lock; this runs without it): send
        what it says, wake the reader, and forget the stream (``release``)."""
        stream = call.stream
        if step.send is Send.RST_STREAM and step.reset_code is not None:
            self.reset_stream(call.stream_id, step.reset_code)
        if release:
            # The stream is forgotten (its slot free, its provider's count down) before
            # its waiters wake: a caller's next call finds it gone.
            self.stream_closed(call)
        if stream.drain:
            call.inbox.end()  # the messages before the status are still read
        else:
            error = stream.final_error()
            assert error is not None
            call.inbox.fail(error)
        if call.headers_event is not None:
            call.headers_arrived()
        ended = call.ended
        if ended is not None:  # the caller's one wake-up, last (apply_end runs once)
            call.ended = None
            ended.release()

    def stream_closed(self, call: ClientCall) -> None:
        with self.lock_mutex:
            was_open = self.calls.pop(call.stream_id, None) is not None
            idle = self.draining and not self.calls
            if self._slot_waiters:
                self.lock.notify_slot_waiters()  # a stream slot is free
        if was_open and call.endpoint is not None:
            call.endpoint.call_ended()
        # Replies nobody will read still count against the connection's window. A call
        # the server ended is closed on the reader thread, the only one that feeds (or
        # defers credit into) its inbox, and nothing feeds it once it left ``calls``:
        # with no credit deferred there is nothing to abandon.
        inbox = call.inbox
        credit = inbox.abandon() if call.stream.error is not None or inbox.deferred else 0
        if credit:
            try:
                self.acknowledge(call.stream_id, credit)
            except RpcError:
                pass
        if idle:
            self._on_idle(self)

    # -- the server's side of each stream (H2Transport.dispatch_client_events) ------

    handle_events = H2Transport.dispatch_client_events

    def client_data_sink(self, stream_id: int) -> ClientCall | None:
        call = self.calls.get(stream_id)
        if call is None or not call.stream.receive_data():
            return None
        return call

    def client_response_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                                end_stream: bool) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        with self.lock_mutex:
            step = call.stream.response_headers(headers, end_stream)
            if step.final is not None:
                self.lock.notify_all()
        if step.final is not None:
            self.apply_end(call, step)
            return
        if call.headers_event is not None:
            call.headers_arrived()
        for key, value in headers:
            if key == b"grpc-encoding":
                if value != b"identity":
                    self._use_response_encoding(call, value.decode("latin-1"))
                break

    def client_trailers(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        complete = call.inbox.decoder.at_boundary()
        with self.lock_mutex:
            step = call.stream.trailers(headers, complete)
            if self._stream_waits:  # a sender of this stream must stop waiting
                self._wake_stream_locked(stream_id)
        if step.final is not None:
            self.apply_end(call, step)

    def client_stream_ended(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        complete = call.inbox.decoder.at_boundary()
        with self.lock:
            step = call.stream.end_stream(complete)
            self.lock.notify_all()
        if step.final is not None:
            self.apply_end(call, step)

    def client_stream_reset(self, stream_id: int, error_code: int) -> None:
        call = self.calls.get(stream_id)
        if call is None:
            return
        with self.lock:
            step = call.stream.reset_by_peer(error_code)
            self.lock.notify_all()
        if step.final is not None:
            self.apply_end(call, step)

    def client_goaway(self, last_stream_id: int, error_code: int) -> None:
        with self.lock:
            self.draining = True
            refused = [(call, call.stream.refused_by_goaway(error_code))
                       for stream_id, call in self.calls.items() if stream_id > last_stream_id]
            # With calls refused, the last one's stream_closed() finds the connection
            # idle and closes it; only a connection with no calls at all is closed here.
            idle = not self.calls
            self.lock.notify_all()
        for call, step in refused:
            if step.final is not None:
                self.apply_end(call, step)
        if idle:
            self._on_idle(self)

    def client_event_failed(self, stream_id: int, error: Exception) -> bool:
        call = self.calls.get(stream_id)
        if call is None:
            return False
        log.warning("bad response on stream %d from %s: %r", stream_id, self.peer, error)
        call.end_locally(error_for(StatusCode.INTERNAL, f"malformed response: {error}"),
                         Input.LOCAL_ERROR)
        return True

    def _use_response_encoding(self, call: ClientCall, name: str) -> None:
        codec = get_codec(name)
        if codec is None:  # compression.md: a response we cannot decode is INTERNAL
            call.end_locally(error_for(StatusCode.INTERNAL,
                                       f"response grpc-encoding {name!r} is not supported"),
                             Input.LOCAL_ERROR)
            return
        limit = call.inbox.decoder.max_message_size
        call.inbox.set_decompressor(lambda data: codec.decompress(data, limit))
        call.inbox.on_bad_message = call.data_failed

    def connection_lost(self, error: RpcError) -> None:
        self.loop.stop(join=False)
        if not self.connected:
            self._on_connect_failed(self, error)
        with self.lock:
            ended = [(call, call.stream.connection_lost(error.code, error.details))
                     for call in self.calls.values()]
            self.calls.clear()
            self.lock.notify_all()
        for call, step in ended:
            if call.endpoint is not None:
                call.endpoint.call_ended()
            if step.final is not None:
                self.apply_end(call, step, release=False)
        self._on_idle(self)


class Call:
    """What a finished or running call tells: metadata, status, and ``cancel()``."""

    def __init__(self, call: ClientCall) -> None:
        self._call = call

    def initial_metadata(self) -> list[tuple[str, str | bytes]]:
        self._call.wait_headers()
        return list(self._call.initial_metadata or ())

    def trailing_metadata(self) -> list[tuple[str, str | bytes]] | None:
        status = self._call.status
        return None if status is None else list(status.metadata)

    def code(self) -> StatusCode | None:
        stream = self._call.stream
        if stream.error is not None:
            return stream.error.code
        return None if stream.status is None else stream.status.code

    def details(self) -> str | None:
        stream = self._call.stream
        if stream.error is not None:
            return stream.error.details
        return None if stream.status is None else stream.status.details

    def is_active(self) -> bool:
        return not self._call.stream.done

    def time_remaining(self) -> float | None:
        deadline = self._call.deadline
        return None if deadline is None else deadline.remaining()

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM CANCEL); False if it had already ended."""
        return self._call.end_locally(
            CancelledError(StatusCode.CANCELLED, "Cancelled by the caller"), Input.CANCEL)


class ResponseIterator(Call):
    """The replies of a server-stream or bidi call; also the call itself.

    Dropping it (or ``cancel()``) before the end cancels the call on the server.
    """

    def __init__(self, call: ClientCall, deserializer: Deserializer | None) -> None:
        super().__init__(call)
        self._deserialize = deserializer

    def __iter__(self) -> ResponseIterator:
        return self

    def __next__(self) -> Any:
        message = self._call.read()
        if message is None:
            raise StopIteration
        deserialize = self._deserialize
        if deserialize is None:
            return message
        try:  # _deserialize's rule, inline: one Python call less per message
            return deserialize(message)
        except Exception as exc:
            raise _deserialize_error(exc) from exc

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None and not call.inbox.done and not call.stream.done:
            call.end_locally(CancelledError(StatusCode.CANCELLED, "response iterator dropped"),
                             Input.ITERATOR_DROPPED)

    def __enter__(self) -> ResponseIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _deserialize_error(exc: Exception) -> RpcError:
    return RpcError(StatusCode.INTERNAL, f"Exception deserializing response: {exc}")


def _deserialize(deserializer: Deserializer, message: bytes) -> Any:
    try:
        return deserializer(message)
    except Exception as exc:
        raise _deserialize_error(exc) from exc


# A request frame up to this size never waits for flow-control window (RFC 9113's
# initial 65,535 bytes, per stream and per connection), so it goes out before the
# connection has read anything (_Method._start).
DEFER_LOOP_MAX_REQUEST = 16 * 1024


class _NotSent(Exception):
    """A try failed before a byte of it went out (no connection, no stream)."""

    def __init__(self, error: RpcError) -> None:
        super().__init__(error)
        self.error = error


class _Method:
    """A callable bound to one remote method; subclasses pick the call shape.

    ``idempotent``: the method may run twice, so under ``failover`` any failure is
    tried again on another provider (otherwise only UNAVAILABLE is)."""

    request_streaming = False
    response_streaming = False

    def __init__(self, client: Client, method_name: str, request_serializer: Serializer | None,
                 response_deserializer: Deserializer | None, idempotent: bool = False) -> None:
        self._client = client
        self.method_name = method_name
        self._serialize = request_serializer
        self._deserialize = response_deserializer
        self.idempotent = idempotent
        # A full "/pkg.Service/Method" path calls that (dubbo.Channel calls any method).
        self._path = method_name if method_name.startswith("/") else \
            f"/{client.reference.service}/{method_name}"

    def _serialized(self, request: Any) -> bytes | bytearray | memoryview:
        data = request if self._serialize is None else self._serialize(request)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"request serialized to {type(data).__name__}, expected bytes "
                            "(set request_serializer)")
        return data

    def _frame(self, request: Any, codec: Codec | None) -> Payload:
        return frame_message(self._serialized(request), codec,
                                    self._client.max_send_message_size)

    def _deadline(self, timeout: float | None) -> Deadline | None:
        return Deadline.after(self._client.reference.timeout if timeout is None else timeout)

    def _attempts(self, deadline: Deadline | None, key: bytes | None,
                  attempt: Callable[..., Any], *args: Any) -> Any:
        """Run ``attempt(endpoint, *args)`` on providers the balancer picks, as many
        times as the cluster strategy allows; its result, or the last error."""
        client = self._client
        policy = client.policy
        tried: set[str] = set()
        number = 0
        while True:
            number += 1
            endpoint = client.pick(tried, key)
            try:
                return attempt(endpoint, *args)
            except _NotSent as exc:
                error, sent = exc.error, False
            except RpcError as exc:
                error, sent = exc, True
            tried.add(endpoint.key)
            expired = deadline is not None and deadline.expired()
            if expired or not policy.retry(error.code, number, idempotent=self.idempotent,
                                           sent=sent,
                                           whole_request=not self.request_streaming):
                if policy.name == "failsafe" and not self.response_streaming:
                    log.warning("%s failed (failsafe, ignored): %s", self._path, error)
                    return _FAILSAFE
                raise error
            log.info("%s failed on %s (%s), trying another provider", self._path,
                     endpoint.key, error.code.name)

    def _start(self, endpoint: Endpoint, request: Any, deadline: Deadline | None,
               metadata: MetadataLike | None, compression_name: str | None,
               frame: Payload | None = None) -> ClientCall:
        """Open the call on ``endpoint``; ``_NotSent`` if nothing of it went out.

        A request that fits the initial flow-control windows goes out without a byte
        read, so a new connection's loop thread starts after it: the thread's start-up
        overlaps the server's work instead of delaying the request."""
        defer = frame is not None and payload_size(frame) <= DEFER_LOOP_MAX_REQUEST
        try:
            return self._open(endpoint, request, deadline, metadata, compression_name,
                              frame, defer)
        finally:
            endpoint.start_loop()  # whoever meets a deferred loop starts it

    def _open(self, endpoint: Endpoint, request: Any, deadline: Deadline | None,
              metadata: MetadataLike | None, compression_name: str | None,
              frame: Payload | None, defer_loop: bool) -> ClientCall:
        client = self._client
        codec = client.codec(compression_name)
        headers = client.headers(self._path, None if deadline is None else deadline.remaining(),
                                 metadata, codec, endpoint.authority)
        if frame is None and not self.request_streaming:
            frame = self._frame(request, codec)
        try:
            transport = endpoint.connection(defer_loop)
            call = ClientCall(transport, deadline, client.max_receive_message_size, endpoint)
            if not self.response_streaming:
                ended = call.ended = threading.Lock()
                ended.acquire()
            # A small request goes with its headers, in one lock hold.
            sent = transport.open_stream(call, headers,
                                         data=frame if type(frame) is bytes else None)
        except RpcError as exc:
            raise _NotSent(exc) from None
        if frame is not None:
            try:
                if sent:
                    transport.flush()
                else:
                    transport.send_data(call.stream_id, frame, True, deadline,
                                        call.stream.get_send_error)
            except RpcError as exc:
                if call.stream.status is None:  # not answered early: the send failed
                    call.end_locally(exc)
                    raise call.stream.error or exc from None
                # answered before the request was all sent: read() reports the status
            else:
                if not sent:
                    call.half_closed()
        else:
            # The HEADERS go out now: the first request may come only after a reply
            # (a server that speaks first), and nothing else may flush them.
            try:
                transport.flush()
            except RpcError:
                pass  # the connection is gone: its loss fails the call
            # In a bidi call a reply may hang on the requests made so far, so none
            # may be held while the caller waits; a client-stream reply comes after
            # the last request anyway.
            urgent = (lambda: call.reading) if self.response_streaming else None
            writer = call.writer = MessageWriter(transport, call.stream_id, deadline,
                                                 call.stream.get_send_error, client.timer(),
                                                 urgent)
            thread = threading.Thread(target=_send_requests,
                                      args=(call, writer, iter(request),
                                            self._frame, codec),
                                      name="dubbo-client-sender", daemon=True)
            thread.start()
        return call

    def _unary_response(self, call: ClientCall, with_call: bool) -> Any:
        call.wait_ended()
        try:
            message = call.read()
            if message is None:
                raise RpcError(StatusCode.UNIMPLEMENTED, "unary call got no response message")
            extra = call.read()
        except RpcError as exc:
            if call.never_processed():  # GOAWAY or REFUSED_STREAM: may go elsewhere
                raise _NotSent(exc) from None
            raise
        if extra is not None:
            error = RpcError(StatusCode.UNIMPLEMENTED,
                             "unary call got more than one response message")
            call.end_locally(error, Input.LOCAL_ERROR)
            raise call.stream.error or error
        response = message if self._deserialize is None else \
            _deserialize(self._deserialize, message)
        return (response, Call(call)) if with_call else response


_FAILSAFE = object()  # a failsafe call's failure: the caller gets None
_UNRESOLVED = object()  # Client._codecs: not looked up yet


class UnaryMethod(_Method):
    def __call__(self, request: Any, timeout: float | None = None,
                 metadata: MetadataLike | None = None, with_call: bool = False,
                 compression: str | None = None) -> Any:
        deadline = self._deadline(timeout)
        client = self._client
        if self.request_streaming:
            key, frame = None, None
        else:  # serialized once: the balancer may hash it, every try sends it
            data = self._serialized(request)
            key = bytes(data) if client.balancer.name == "consistenthash" else None
            frame = frame_message(data, client.codec(compression),
                                         client.max_send_message_size)
        if client.policy.name == "forking" and not self.request_streaming:
            result = self._fork(request, deadline, metadata, compression, with_call, key, frame)
        else:
            result = self._attempts(deadline, key, self._unary_attempt, request, deadline,
                                    metadata, compression, frame, with_call)
        if result is _FAILSAFE:
            return (None, None) if with_call else None
        return result

    def _unary_attempt(self, endpoint: Endpoint, request: Any, deadline: Deadline | None,
                       metadata: MetadataLike | None, compression: str | None,
                       frame: Payload | None, with_call: bool) -> Any:
        return self._unary_response(
            self._start(endpoint, request, deadline, metadata, compression, frame), with_call)

    def _fork(self, request: Any, deadline: Deadline | None, metadata: MetadataLike | None,
              compression: str | None, with_call: bool, key: bytes | None,
              frame: Payload | None) -> Any:
        """``forking``: the same call to several providers at once; the first success
        wins and the others are cancelled."""
        client = self._client
        endpoints: list[Endpoint] = []
        tried: set[str] = set()
        for _ in range(min(client.policy.forks, max(1, len(client.providers())))):
            endpoint = client.pick(tried, key)
            tried.add(endpoint.key)
            endpoints.append(endpoint)
        results: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        calls: list[ClientCall] = []
        won = threading.Event()  # set before the losers are cancelled

        def run(endpoint: Endpoint) -> None:
            try:
                call = self._start(endpoint, request, deadline, metadata, compression, frame)
                calls.append(call)
                if won.is_set():  # started after the winner cancelled the others
                    call.end_locally(CancelledError(StatusCode.CANCELLED, "another fork won"),
                                     Input.CANCEL)
                results.put((True, self._unary_response(call, with_call)))
            except _NotSent as exc:
                results.put((False, exc.error))
            except Exception as exc:  # bad metadata, ...: the caller must hear of it too
                results.put((False, exc))

        for endpoint in endpoints:
            threading.Thread(target=run, args=(endpoint,), name="dubbo-client-fork",
                             daemon=True).start()
        error: Exception | None = None
        for _ in endpoints:
            ok, value = results.get()
            if ok:
                won.set()
                for call in list(calls):
                    call.end_locally(CancelledError(StatusCode.CANCELLED, "another fork won"),
                                     Input.CANCEL)
                return value
            error = value
        assert error is not None
        raise error

    def with_call(self, request: Any, timeout: float | None = None,
                  metadata: MetadataLike | None = None,
                  compression: str | None = None) -> tuple[Any, Call]:
        return self(request, timeout, metadata, True, compression)  # type: ignore[no-any-return]


class ClientStreamMethod(UnaryMethod):
    request_streaming = True


class ServerStreamMethod(_Method):
    response_streaming = True

    def __call__(self, request: Any, timeout: float | None = None,
                 metadata: MetadataLike | None = None,
                 compression: str | None = None) -> ResponseIterator:
        deadline = self._deadline(timeout)
        key = None
        if not self.request_streaming and self._client.balancer.name == "consistenthash":
            key = bytes(self._serialized(request))
        call = self._attempts(deadline, key, self._start, request, deadline, metadata,
                              compression)
        return ResponseIterator(call, self._deserialize)


class BidiStreamMethod(ServerStreamMethod):
    request_streaming = True


def _send_requests(call: ClientCall, writer: MessageWriter, requests: Iterator[Any],
                   frame: Callable[[Any, Codec | None], Payload], codec: Codec | None) -> None:
    """Sender thread: stream the caller's requests, then half-close."""
    clock = time.perf_counter
    get_send_error = call.stream.get_send_error
    try:
        while True:
            if not call.requests_taken and not call.take_requests():
                return  # over before the first request: it may be tried elsewhere
            started = clock()
            try:
                request = next(requests)
            except StopIteration:
                break
            fast = clock() - started < FAST_PRODUCER
            if get_send_error() is not None:  # without the lock: send_data asks again
                return
            writer.write(frame(request, codec), fast)
        writer.close(end_stream=True)
        call.half_closed()
    except RpcError:
        return  # the call ended (status, cancel, deadline); the reader reports why
    except Exception as exc:
        error = error_for(StatusCode.CANCELLED, f"Exception iterating requests: {exc!r}")
        error.__cause__ = exc
        log.debug("request iterator of stream %d raised", call.stream_id, exc_info=True)
        call.end_locally(error, Input.LOCAL_ERROR)


class Client:
    """Calls one remote service. Thread-safe: share one client between threads.

    The service may be served by one address (``tri://host:port/Service``), a static
    list (``tri://h1:p1,h2:p2/Service``) or whatever a registry lists (``dubbo.Dubbo``
    with a ``RegistryConfig``): each call goes to a provider the reference's load
    balancer picks (``random`` by default), and is tried again elsewhere as its
    cluster strategy says (``failover`` with 2 retries by default; cluster/policy.py).

    ``keepalive_time`` (seconds, off by default as in grpc) sends a PING when a
    connection with calls in flight has been silent that long; no answer within
    ``keepalive_timeout`` fails its calls with UNAVAILABLE instead of hanging.
    ``keepalive_permit_without_calls`` pings idle connections too (as grpc's option of
    that name; grpc-go servers answer frequent idle pings with GOAWAY too_many_pings).
    """

    def __init__(self, reference: ReferenceConfig, *,
                 application: ApplicationConfig | None = None,
                 connect_timeout: float = 5.0,
                 max_receive_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 max_send_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                 compression: str | None = None,
                 keepalive_time: float | None = None,
                 keepalive_timeout: float = 20.0,
                 keepalive_permit_without_calls: bool = False,
                 ssl_context: ssl.SSLContext | None = None,
                 providers: list[tuple[str, int, int]] | None = None,
                 content_type: str = "application/grpc+proto",
                 interceptors: Sequence[ClientInterceptor] = ()) -> None:
        if not reference.service:
            raise ValueError("ReferenceConfig has no service name")
        self.reference = reference
        self.application = application
        # Around every call of the methods made below (dubbo/interceptors), first outermost.
        self.interceptors = tuple(interceptors)
        self.connect_timeout = connect_timeout
        self.max_receive_message_size = max_receive_message_size
        self.max_send_message_size = max_send_message_size
        self.compression = codec_name(compression) or reference.compression
        # Resolved codecs by (call's choice, client's); request blocks without metadata
        # or timeout by (path, authority, codec). Plain dicts: a racing miss only
        # builds the same value twice.
        self._codecs: dict[tuple[Any, Any], Codec | None] = {}
        self._header_blocks: dict[tuple[str, str, str | None], list[tuple[str, str]]] = {}
        self.codec()  # fail fast on an unknown name
        self.keepalive_time = keepalive_time
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_permit_without_calls = keepalive_permit_without_calls
        # TLS with ALPN h2 (dubbo.tls.client_context makes one); None: plaintext h2c.
        self.ssl_context = None if ssl_context is None else tls_prepare(ssl_context)
        self.balancer = load_balance(reference.load_balance or "random")
        self.policy = ClusterPolicy.of(reference.cluster, reference.retries,
                                       reference.forks)
        self._timer: Scheduler | None = None
        self._lock = threading.Lock()  # guards _endpoints, _endpoint_list, _closed, _timer
        # The providers calls may go to, by "host:port"; replaced as a registry says.
        self._endpoints: dict[str, Endpoint] = {}
        self._endpoint_list: tuple[Endpoint, ...] = ()  # its values, for pick() (_lock)
        self._closed = False
        self._on_close: list[Callable[[], None]] = []  # registry unsubscribe, ...
        extra = []
        if reference.version:
            extra.append(("tri-service-version", reference.version))
        if reference.group:
            extra.append(("tri-service-group", reference.group))
        if application is not None:
            extra.append(("tri-consumer-appname", application.name))
        self._extra_headers = extra
        # "application/grpc+json" with JSON (de)serializers: dubbo.wire.json_codec
        self.content_type = content_type
        self._scheme = "http" if ssl_context is None else "https"
        if providers is None:
            providers = [(host, port, DEFAULT_WEIGHT) for host, port in reference.addresses]
        self.set_providers(providers)

    # -- method factories (API.md) ------------------------------------------------

    def unary(self, method_name: str, request_serializer: Serializer | None = None,
              response_deserializer: Deserializer | None = None, *,
              idempotent: bool = False) -> UnaryMethod:
        return self._intercepted(UnaryMethod(
            self, method_name, request_serializer, response_deserializer, idempotent))

    def client_stream(self, method_name: str, request_serializer: Serializer | None = None,
                      response_deserializer: Deserializer | None = None, *,
                      idempotent: bool = False) -> ClientStreamMethod:
        return self._intercepted(ClientStreamMethod(
            self, method_name, request_serializer, response_deserializer, idempotent))

    def server_stream(self, method_name: str, request_serializer: Serializer | None = None,
                      response_deserializer: Deserializer | None = None, *,
                      idempotent: bool = False) -> ServerStreamMethod:
        return self._intercepted(ServerStreamMethod(
            self, method_name, request_serializer, response_deserializer, idempotent))

    def bidi_stream(self, method_name: str, request_serializer: Serializer | None = None,
                    response_deserializer: Deserializer | None = None, *,
                    idempotent: bool = False) -> BidiStreamMethod:
        return self._intercepted(BidiStreamMethod(
            self, method_name, request_serializer, response_deserializer, idempotent))

    bi_stream = bidi_stream

    def _intercepted(self, method: _M) -> _M:
        if not self.interceptors:
            return method
        from ..interceptors.client import intercept_method
        return intercept_method(method, self.interceptors)

    # -- connections ---------------------------------------------------------------

    def codec(self, name: Any = None) -> Codec | None:
        """The codec for a call's requests: the call's choice, else the client's."""
        key = (name, self.compression)
        codec = self._codecs.get(key, _UNRESOLVED)
        if codec is _UNRESOLVED:  # a few names at most: valid ones only get here twice
            codec = resolve(codec_name(name) or self.compression)
            if len(self._codecs) >= 64:
                self._codecs.clear()
            self._codecs[key] = codec
        return codec  # type: ignore[return-value]

    def headers(self, path: str, timeout: float | None, metadata: MetadataLike | None,
                codec: Codec | None, authority: str) -> list[tuple[str, str]]:
        if metadata:
            return request_headers(path, authority, scheme=self._scheme, timeout=timeout,
                                   metadata=encode_metadata(metadata),
                                   accept_encoding=accept_encoding_header(),
                                   encoding=codec.name if codec is not None else None,
                                   extra=self._extra_headers, content_type=self.content_type)
        # Without metadata a method's block is the same call after call (but for the
        # timeout): built once per path, provider and codec.
        key = (path, authority, None if codec is None else codec.name)
        block = self._header_blocks.get(key)
        if block is None:
            block = request_headers(path, authority, scheme=self._scheme,
                                    accept_encoding=accept_encoding_header(),
                                    encoding=key[2], extra=self._extra_headers,
                                    content_type=self.content_type)
            if len(self._header_blocks) >= 256:
                self._header_blocks.clear()
            self._header_blocks[key] = block
        if timeout is None:
            return block.copy()
        # request_headers' order: the four pseudo-headers, then grpc-timeout.
        return [*block[:4], ("grpc-timeout", encode_timeout(timeout)), *block[4:]]

    # -- providers -----------------------------------------------------------------

    def set_providers(self, providers: list[tuple[str, int, int]]) -> None:
        """Call these ``(host, port, weight)`` providers from now on. Those that left
        finish their calls and close; their replacements connect on first use."""
        retired = []
        with self._lock:
            if self._closed:
                return
            wanted = {f"{host}:{port}": (host, port, weight) for host, port, weight in providers}
            for key in list(self._endpoints):
                if key not in wanted:
                    retired.append(self._endpoints.pop(key))
            for key, (host, port, weight) in wanted.items():
                endpoint = self._endpoints.get(key)
                if endpoint is None:
                    self._endpoints[key] = Endpoint(self, host, port, weight)
                else:
                    endpoint.weight = weight
            self._endpoint_list = tuple(self._endpoints.values())
        for endpoint in retired:
            endpoint.retire()

    def providers(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.values())

    def pick(self, tried: set[str], key: bytes | None = None) -> Endpoint:
        """The provider for a call: balanced over those not tried yet and not set aside
        after a failed connect (if none is left, over those not tried)."""
        # Unlocked: _closed only goes False -> True and _endpoint_list is replaced whole
        # under _lock (a call racing close() or set_providers() sees either state).
        if self._closed:
            # Not UNAVAILABLE: that code tells callers and failover to try again.
            raise RpcError(StatusCode.FAILED_PRECONDITION,
                           f"the client of {self.reference.service} is closed: "
                           "calls need a new dubbo.Client")
        endpoints = self._endpoint_list
        if len(endpoints) == 1:
            return endpoints[0]
        if not endpoints:
            raise UnavailableError(StatusCode.UNAVAILABLE,
                                   f"no provider of {self.reference.service}"
                                   + _describe_filter(self.reference))
        fresh = [e for e in endpoints if e.key not in tried]
        candidates = [e for e in fresh if e.available()] or fresh or list(endpoints)
        if len(candidates) == 1:
            return candidates[0]
        return self.balancer.select(candidates, key)

    def connection(self) -> ClientConnection:
        """A connection to a provider the balancer picks."""
        return self.pick(set()).connection()

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the client closes (a registry subscription's end)."""
        self._on_close.append(fn)

    def timer(self) -> Scheduler:
        """The client's timer thread (keepalive, request packing), started on first use."""
        with self._lock:
            return self._timer_locked()

    def _timer_locked(self) -> Scheduler:
        if self._timer is None:
            self._timer = Scheduler("dubbo-client-timer")
        return self._timer

    def close(self) -> None:
        """Close every connection; calls in flight fail with UNAVAILABLE "client
        closed", later calls with UNAVAILABLE "client is closed"."""
        with self._lock:
            self._closed = True
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            self._endpoint_list = ()
            on_close, self._on_close = self._on_close, []
        for fn in on_close:
            try:
                fn()
            except Exception:
                log.exception("closing %r failed", fn)
        for endpoint in endpoints:
            endpoint.close()
        if self._timer is not None:
            self._timer.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _describe_filter(reference: ReferenceConfig) -> str:
    wanted = [f"{k}={v}" for k, v in (("group", reference.group),
                                      ("version", reference.version)) if v]
    return f" ({', '.join(wanted)})" if wanted else ""
