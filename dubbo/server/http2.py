"""Plain-HTTP unary calls on HTTP/2 streams (``curl --http2-prior-knowledge``): a
request on the gRPC port whose content-type is not ``application/grpc*``.

``H2HttpCall`` is a ``ServerCall`` whose request is a body gathered whole and whose
answer is one HTTP response (HEADERS, the JSON body, END_STREAM), never gRPC trailers.
Its ``ServerStream`` goes through the same table as a gRPC call's: REFUSE over the
stream limit, REJECT for a request answered at once (404, 415, 429...), ACCEPT, then
SEND_MESSAGE and SENT_END for the response; DEADLINE (504), BAD_INPUT (a body over the
limit, 413) and SEND_STALLED end it early from any thread; the client's reset, a lost
connection and ``cancel_locally`` as for any call. Only the rendering is HTTP's: where
the table says "a status", this module sends a response. It sends only through
``H2Transport``'s server stream operations.

Imported on first use (``HttpUnary.start_h2_stream``): it subclasses ``ServerCall``,
and server.py imports ``http_unary``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..call.server_stream import CANCEL, Event, ServerStream
from ..status import RpcError, SendStalledError, StatusCode
from ..wire.deadline import Deadline
from ..wire.framing import MessageDecoder
from ..wire.metadata import MetadataLike, encode_metadata
from .http_unary import HttpResponse, Prepared, http_status
from .server import ServerCall

if TYPE_CHECKING:  # pragma: no cover
    from .http_unary import HttpUnary, JsonMethod
    from .server import Server, ServerConnection

__all__ = ["BodyDecoder", "H2HttpCall", "start_h2_call"]

log = logging.getLogger("dubbo.server.http")

# gRPC's "HTTP to gRPC Status Code Mapping", for the status a refused stream records.
_HTTP_TO_CODE = {400: StatusCode.INTERNAL, 401: StatusCode.UNAUTHENTICATED,
                 403: StatusCode.PERMISSION_DENIED, 404: StatusCode.UNIMPLEMENTED,
                 429: StatusCode.UNAVAILABLE, 502: StatusCode.UNAVAILABLE,
                 503: StatusCode.UNAVAILABLE, 504: StatusCode.UNAVAILABLE}


class BodyDecoder(MessageDecoder):
    """An HTTP body as the call's ``Inbox`` takes it: every DATA frame is one chunk
    (no gRPC framing), at most ``max_message_size`` bytes in all; more raises
    RESOURCE_EXHAUSTED, which the transport reports as the call's bad input."""

    __slots__ = ("received",)

    def __init__(self, max_message_size: int | None) -> None:
        super().__init__(max_message_size)
        self.received = 0  # the reader thread's alone

    def at_boundary(self) -> bool:
        return True  # a body may end anywhere

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        self.received += len(data)
        limit = self.max_message_size
        if limit is not None and self.received > limit:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, f"request body over {limit} bytes")
        return [bytes(data)] if data else []


def _headers(response: HttpResponse) -> list[tuple[str, str]]:
    # (no connection-specific headers in HTTP/2, RFC 9113 §8.2.2)
    return [(":status", str(response.status)), ("content-type", response.content_type),
            ("content-length", str(len(response.body)))] + \
        [(k, v) for k, v in response.headers if k != "connection"]


def _answer_now(connection: ServerConnection, stream_id: int, response: HttpResponse,
                reset: int | None) -> None:
    """Send a whole response without waiting (``lock`` held): a body the stream's
    window does not take now is left out (content-length 0) rather than waited for."""
    if len(response.body) > connection.send_window(stream_id):
        response = HttpResponse(response.status, b"", response.content_type,
                                response.headers)
    connection.push_stream_response(stream_id, _headers(response), response.body, reset)


def start_h2_call(http: HttpUnary, connection: ServerConnection, stream: ServerStream,
                  headers: list[tuple[bytes, bytes]]) -> None:
    """A non-gRPC request on an HTTP/2 stream (loop thread): refuse it, answer it at
    once, or run it on a worker as ServerConnection does a gRPC call."""
    server = http.server
    stream_id = stream.stream_id
    if server.stopping or connection.open_streams_before(stream_id) >= \
            server.max_concurrent_streams:
        send = stream.refuse()
        with connection.lock:
            try:
                connection.push_stream_frames(stream_id, None, reset=send.reset)
            except RpcError:
                pass
        _flush(connection)
        return
    table = dict(headers)
    prepared = http.prepare(table.get(b":method", b"").decode("latin-1"),
                            table.get(b":path", b"").decode("utf-8", "replace"), headers)
    if isinstance(prepared, Prepared) and (
            len(connection.calls) >= server.max_calls_per_connection or not server.admit()):
        prepared = HttpResponse.error(429, "server is at capacity")
    if isinstance(prepared, HttpResponse):
        _reject(connection, stream, prepared)
        return
    stream.accept(prepared.head.content_type)  # not shared with other threads yet
    try:
        call = H2HttpCall(server, connection, stream, prepared)
    except Exception:
        server.call_finished()  # undo admit()
        raise
    connection.launch(call)


def _reject(connection: ServerConnection, stream: ServerStream,
            response: HttpResponse) -> None:
    """REJECT, rendered as an HTTP response with its JSON body. Unlike gRPC's early
    status, no RST_STREAM(NO_ERROR) follows: curl drops a response whose stream is
    reset before it sent its whole body; the rest of the body is credited and dropped
    as it comes (the stream is in no call table)."""
    message = response.body.decode("utf-8", "replace")
    stream.reject(_HTTP_TO_CODE.get(response.status, StatusCode.UNKNOWN), message,
                  http_status=response.status)
    with connection.lock:
        try:
            _answer_now(connection, stream.stream_id, response, None)
        except RpcError:
            pass  # reset by the peer in the same read
    _flush(connection)


def _flush(connection: ServerConnection) -> None:
    try:
        connection.flush()
    except RpcError:
        pass


class H2HttpCall(ServerCall):
    """One plain-HTTP unary call on an HTTP/2 stream (see the module docstring).

    Besides ServerCall's: ``method`` (the JSON conversions) and ``initial_metadata``
    (headers of the response, which goes out whole), both the worker's alone.
    """

    __slots__ = ("method", "initial_metadata")

    def __init__(self, server: Server, transport: ServerConnection, stream: ServerStream,
                 prepared: Prepared) -> None:
        super().__init__(server, transport, stream, prepared.head, prepared.method.handler)
        self.method: JsonMethod = prepared.method
        self.initial_metadata: list[tuple[str, str]] = []
        self.inbox.decoder = BodyDecoder(server.max_receive_message_size)

    # -- what the handler's context does ---------------------------------------------

    def send_initial_metadata(self, metadata: MetadataLike) -> None:
        # The reply goes out whole: the metadata becomes response headers.
        self.initial_metadata.extend(encode_metadata(metadata))

    @property
    def trailing_metadata(self) -> list[tuple[str, str]]:
        return self._trailing_metadata  # headers too: an HTTP response has no trailers

    def set_compression(self, name: str | None) -> None:
        """HTTP replies go uncompressed."""

    # -- ends decided by the server ----------------------------------------------------

    def end_now(self, event: Event, error: RpcError) -> None:
        """DEADLINE (504), BAD_INPUT (413 for a body over the limit) or SEND_STALLED,
        from any thread, without waiting: the table's early status becomes a whole
        response (or, once the response headers went out, RST_STREAM(CANCEL) alone),
        its RST_STREAM stops a client still sending, and the handler's I/O raises."""
        status = 413 if event is Event.BAD_INPUT and \
            error.code is StatusCode.RESOURCE_EXHAUSTED else http_status(error.code)
        response = HttpResponse.error(status, error.details or error.code.name)
        transport = self.transport
        with transport.lock:
            if transport.closed:
                return
            replying = self.stream.replying
            send = self.stream.end_now(event, error)
            if not send:  # the call had ended already
                return
            try:
                if replying:  # the response is under way: it can only be cut short
                    transport.push_stream_frames(self.stream_id, None, reset=CANCEL)
                else:
                    _answer_now(transport, self.stream_id, response, send.reset)
            except RpcError:  # reset by the peer meanwhile, or our END_STREAM went out
                pass
            transport.lock.notify_all()
        _flush(transport)
        self._stopped(error)

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            if not self.stream.live:  # cancelled while it waited for a worker
                return
            try:
                body = self._read_body()
            except RpcError as exc:
                if self.stream.live:  # the body stopped coming (else: the call ended)
                    status = 408 if exc.code is StatusCode.DEADLINE_EXCEEDED else \
                        http_status(exc.code)
                    self._respond(HttpResponse.error(status, exc.details))
                return
            self._respond(self.server.http.execute(self.method, body, self))
        except SendStalledError as exc:
            log.info("%s on %s: %s", self.head.path, self.transport.peer, exc.details)
            self.end_now(Event.SEND_STALLED, exc)
        except RpcError:
            pass  # reset, cancelled or past the deadline while the response went out
        except Exception:
            log.exception("HTTP/2 JSON call %s failed", self.head.path)
        finally:
            if self.timer is not None:
                self.timer.cancel()
            self._run_callbacks()  # before the call counts as done: stop() waits for them
            self.transport.call_done(self)
            self._break_cycles()

    def _read_body(self) -> bytes:
        """The whole request body. A client that stops sending it is answered 408
        after ``handshake_timeout`` (the call's deadline, if sooner, ends it first)."""
        until = Deadline.after(self.server.handshake_timeout)
        chunks: list[bytes] = []
        while True:
            chunk, credit = self.inbox.get(until)
            if credit:
                self.transport.acknowledge(self.stream_id, credit)
            if chunk is None:
                return b"".join(chunks)
            chunks.append(chunk)

    def _respond(self, response: HttpResponse) -> None:
        """The response, from the worker: SEND_MESSAGE puts our headers out, the body
        waits for flow control (up to the server's send timeout), then SENT_END."""
        transport = self.transport
        with transport.lock:
            transport.check_sendable(self.get_error)
            self.stream.send_message()  # its gRPC headers are not HTTP's: ours go
            transport.push_stream_frames(self.stream_id, _headers(response))
        transport.send_data(self.stream_id, response.body, True, self.deadline,
                            self.get_error, send_timeout=self.server.send_timeout)
        self._sent_end()
