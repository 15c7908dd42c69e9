"""JSON on the server: ``application/grpc+json`` calls, and unary calls as plain HTTP
the way Dubbo Java 3.3 answers them (PROTOCOL.md §6), over HTTP/2 (a request whose
content-type is not ``application/grpc*``) and HTTP/1.1 (``http1.py``)::

    curl -H 'content-type: application/json' -d '{"name":"x"}' http://127.0.0.1:50051/pkg.Greeter/SayHello

Success is ``200`` with the reply as JSON; a failure is the HTTP status Java maps the
gRPC code to, with ``{"status":"<http status>","message":"..."}``. Only unary methods
are reachable this way; their message types must be known (``json_codec``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import h2.errors
import h2.exceptions

from ..proxy.handlers import CallType, RpcMethodHandler, RpcServiceHandler
from ..status import CancelledError, DeadlineExceededError, RpcError, StatusCode
from ..wire import json_codec
from ..wire.deadline import Deadline
from ..wire.metadata import MetadataLike, RequestHead, decode_metadata, encode_metadata
from .context import ServicerContext

if TYPE_CHECKING:  # pragma: no cover
    from .server import Server, ServerCall, ServerConnection

__all__ = ["HttpUnary", "HttpResponse", "http_status", "is_plain_http"]

log = logging.getLogger("dubbo.server.http")

# Dubbo Java's TriRpcStatus.grpcCodeToHttpStatus (PROTOCOL.md §5, last paragraph).
_CODE_TO_HTTP = {
    StatusCode.OK: 200, StatusCode.CANCELLED: 499, StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400, StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404, StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403, StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400, StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400, StatusCode.UNIMPLEMENTED: 501, StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503, StatusCode.DATA_LOSS: 500, StatusCode.UNAUTHENTICATED: 401,
}
# Request headers that are HTTP's own, not call metadata a handler should see.
_NOT_METADATA = frozenset(
    b"host content-length connection keep-alive transfer-encoding expect upgrade accept "
    b"accept-encoding content-encoding user-agent tri-service-timeout".split())
_GRPC = b"application/grpc"


def http_status(code: StatusCode) -> int:
    """The HTTP status Dubbo Java answers an HTTP call failing with ``code``."""
    return _CODE_TO_HTTP.get(code, 500)


def is_plain_http(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True for an HTTP/2 request that is not gRPC (its content-type does not start
    with ``application/grpc``): a curl-style unary call."""
    for key, value in headers:
        if key == b"content-type":
            return not (value.startswith(_GRPC) and value[16:17] in (b"", b"+", b";"))
    return True


@dataclasses.dataclass
class HttpResponse:
    """What goes back: status, content-type, body and extra headers."""

    status: int
    body: bytes
    content_type: str = json_codec.JSON_CONTENT_TYPE
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @classmethod
    def error(cls, status: int, message: str,
              headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        """Dubbo Java's ErrorResponse: ``status`` is the HTTP status as a string."""
        body = json.dumps({"status": str(status), "message": message},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(status, body, headers=headers or [])


class JsonMethod:
    """One method's conversions between JSON and what its handler takes and returns."""

    __slots__ = ("handler", "request_cls", "response_cls", "_direct")

    def __init__(self, handler: RpcMethodHandler, request_cls: Any, response_cls: Any) -> None:
        self.handler = handler
        self.request_cls = request_cls
        self.response_cls = response_cls
        deserialize = handler.request_deserializer
        # The handler's deserializer is the class's own FromString: hand it the message.
        self._direct = getattr(deserialize, "__self__", None) is request_cls and \
            getattr(deserialize, "__name__", "") == "FromString"

    def decode(self, data: bytes) -> Any:
        """JSON bytes -> what the handler takes; ``ValueError`` for bad JSON."""
        message = json_codec.json_to_message(data, self.request_cls)
        deserialize = self.handler.request_deserializer
        if self._direct:
            return message
        wire = message.SerializeToString()
        return wire if deserialize is None else deserialize(wire)

    def encode(self, response: Any) -> bytes:
        """What the handler returned -> JSON bytes."""
        if not isinstance(response, json_codec._message_base()):
            serialize = self.handler.response_serializer
            data = response if serialize is None else serialize(response)
            if self.response_cls is None:
                raise TypeError("the reply's message type is unknown: give the service a "
                                "file_descriptor or return protobuf messages")
            response = self.response_cls.FromString(bytes(data))
        return json_codec.message_to_json(response)

    def grpc_handler(self) -> RpcMethodHandler:
        """The handler with JSON (de)serializers, for ``application/grpc+json`` calls."""
        return dataclasses.replace(self.handler, request_deserializer=self.decode,
                                   response_serializer=self.encode)


class HttpCall:
    """What ``ServicerContext`` sees of an HTTP unary call (HTTP/1.1 or HTTP/2).

    ``_lock`` guards ``cancelled`` and ``_callbacks``; the rest belongs to the worker.
    """

    def __init__(self, transport: Any, head: RequestHead, deadline: Deadline | None,
                 on_cancel: Callable[[], None] | None = None) -> None:
        self.transport = transport  # has .peer and .tls, as a ServerConnection
        self.head = head
        self.deadline = deadline
        self.cancelled = False
        self.initial_metadata: list[tuple[str, str]] = []
        self.trailing_metadata: list[tuple[str, str]] = []
        self._callbacks: list[Callable[[], Any]] | None = []
        self._lock = threading.Lock()
        self._on_cancel = on_cancel

    def is_active(self) -> bool:
        if self.cancelled:
            return False
        return self.deadline is None or not self.deadline.expired()

    def cancel(self) -> None:
        """The peer left (or the server gave up): the handler's context says so."""
        with self._lock:
            self.cancelled = True
        self.run_callbacks()

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def run_callbacks(self) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("call callback %r failed", callback)

    def send_initial_metadata(self, metadata: MetadataLike) -> None:
        # HTTP unary replies go out whole: the metadata becomes response headers.
        self.initial_metadata.extend(encode_metadata(metadata))

    def set_trailing_metadata(self, metadata: MetadataLike) -> None:
        self.trailing_metadata = encode_metadata(metadata)  # headers too: no trailers

    def set_compression(self, name: str | None) -> None:
        """HTTP unary replies go uncompressed."""

    def cancel_locally(self) -> None:
        self.cancel()
        if self._on_cancel is not None:
            self._on_cancel()


@dataclasses.dataclass
class Prepared:
    """A routed HTTP unary request, waiting for its body."""

    head: RequestHead
    method: JsonMethod
    deadline: Deadline | None


class HttpUnary:
    """The server's JSON and plain-HTTP side; one per ``Server``.

    ``_lock`` guards ``_methods`` (JSON conversions by method, filled on first use)
    and ``_connections`` (HTTP/1.1 connections and sockets still being sniffed).
    """

    # Requests served on one HTTP/1.1 connection before it is closed (keep-alive bound).
    max_requests_per_connection = 1000

    def __init__(self, server: Server) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._methods: dict[tuple[str, str, int], tuple[RpcMethodHandler, JsonMethod | None]] = {}
        self._connections: set[Any] = set()

    # -- message types ------------------------------------------------------------

    def _service_of(self, service_name: str, handler: RpcMethodHandler) -> RpcServiceHandler | None:
        server = self.server
        candidates = list(server.services.get(service_name, {}).values())
        builtin = getattr(server, "builtin_services", {}).get(service_name)
        if builtin is not None:
            candidates.append(builtin)
        for service in candidates:
            if any(h is handler for h in service.method_handlers.values()):
                return service
        return candidates[0] if candidates else None

    def json_method(self, service_name: str, method_name: str,
                    handler: RpcMethodHandler) -> JsonMethod | None:
        """``handler``'s JSON conversions, or None when its message types are unknown."""
        key = (service_name, method_name, id(handler))
        with self._lock:
            found = self._methods.get(key)
        if found is not None and found[0] is handler:
            return found[1]
        service = self._service_of(service_name, handler)
        try:
            request_cls, response_cls = json_codec.method_types(
                service_name, method_name, handler.request_deserializer,
                None if service is None else service.file_descriptor)
        except Exception:
            log.exception("looking up the message types of /%s/%s failed", service_name,
                          method_name)
            request_cls = response_cls = None
        method = None if request_cls is None else JsonMethod(handler, request_cls, response_cls)
        with self._lock:
            self._methods[key] = (handler, method)
        return method

    def grpc_json_handler(self, head: RequestHead,
                          handler: RpcMethodHandler) -> RpcMethodHandler | None:
        """For an ``application/grpc+json`` call: ``handler`` reading and writing JSON
        payloads, or None when its message types are unknown."""
        method = self.json_method(head.service, head.method, handler)
        return None if method is None else method.grpc_handler()

    # -- plain HTTP unary calls ---------------------------------------------------

    def prepare(self, method: str, target: str,
                headers: Sequence[tuple[bytes, bytes]]) -> Prepared | HttpResponse:
        """Route a request by its head; an HttpResponse when it is refused."""
        if self.server.stopping:
            return HttpResponse.error(503, "server is stopping", [("connection", "close")])
        path = target.split("?", 1)[0].rstrip("/")  # Java tolerates a trailing slash
        service, _, method_name = path[1:].rpartition("/")
        if method != "POST":
            return HttpResponse.error(405, f"method {method} not allowed: use POST",
                                      [("allow", "POST")])
        if not path.startswith("/") or not service or not method_name:
            return HttpResponse.error(404, f"Invoker not found: {target} is not "
                                           "/{service}/{method}")
        table = dict(headers)
        for alias in (b"group", b"version"):  # Java reads rest-service-* as well
            rest = table.get(b"rest-service-" + alias)
            if rest is not None and b"tri-service-" + alias not in table:
                table[b"tri-service-" + alias] = rest
        content_type = table.get(b"content-type", b"").decode("latin-1")
        timeout = None
        raw_timeout = table.get(b"tri-service-timeout")
        if raw_timeout is not None:
            try:
                timeout = int(raw_timeout) / 1000.0
            except ValueError:
                return HttpResponse.error(400, "tri-service-timeout must be milliseconds, "
                                               f"not {raw_timeout.decode('latin-1')!r}")
        head = RequestHead(service=service, method=method_name, content_type=content_type,
                           timeout=timeout, encoding=None, accept_encoding=None,
                           metadata=decode_metadata(
                               [(k, v) for k, v in headers if k not in _NOT_METADATA]),
                           headers=table)
        handler, miss = self.server.lookup(head)
        if handler is None:
            return HttpResponse.error(404, miss or "Invoker not found")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != json_codec.JSON_CONTENT_TYPE:
            return HttpResponse.error(
                415, f"unsupported content-type {content_type!r}: HTTP calls take "
                     "application/json (gRPC calls application/grpc)")
        if handler.call_type is not CallType.UNARY:
            kind = handler.call_type.value.replace("_", "-")
            return HttpResponse.error(
                501, f"{head.path} is a {kind} method: plain HTTP reaches unary methods "
                     "only; call it with gRPC (HTTP/2, application/grpc)")
        json_method = self.json_method(service, method_name, handler)
        if json_method is None:
            return HttpResponse.error(
                415, f"{head.path} takes no JSON: its message types are unknown (give the "
                     "handler protobuf (de)serializers or the service a file_descriptor)")
        return Prepared(head, json_method, Deadline.after(timeout))

    def execute(self, prepared: Prepared, body: bytes, call: HttpCall) -> HttpResponse:
        """Run the handler (on a worker thread) and build the response."""
        method = prepared.method
        handler = method.handler
        context = ServicerContext(cast("ServerCall", call))
        path = prepared.head.path
        try:
            try:
                request = method.decode(body)
            except Exception as exc:
                raise RpcError(StatusCode.INVALID_ARGUMENT, f"bad JSON request: {exc}") from None
            args: tuple[Any, ...] = (request, context) if handler.takes_context else (request,)
            try:
                response = handler.behavior(*args)
            except RpcError:
                raise
            except Exception as exc:
                log.exception("handler %s raised", path)
                raise RpcError(StatusCode.UNKNOWN, f"Exception calling application: {exc}") \
                    from None
            if context.code not in (None, StatusCode.OK):
                raise RpcError(context.code, context.details)
            if prepared.deadline is not None and prepared.deadline.expired():
                raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            try:
                data = method.encode(response)
            except Exception as exc:
                log.exception("handler %s returned a reply that cannot be written as JSON",
                              path)
                raise RpcError(StatusCode.INTERNAL,
                               f"Exception serializing response: {exc}") from None
            return HttpResponse(200, data, headers=call.initial_metadata +
                                call.trailing_metadata)
        except RpcError as exc:
            extra = call.initial_metadata + (encode_metadata(exc.trailing_metadata)
                                             if exc.trailing_metadata else
                                             call.trailing_metadata)
            return HttpResponse.error(http_status(exc.code), exc.details or exc.code.name,
                                      extra)

    # -- HTTP/2 streams -----------------------------------------------------------

    def start_h2_stream(self, connection: ServerConnection, stream_id: int,
                        headers: list[tuple[bytes, bytes]]) -> None:
        """A non-gRPC request on an HTTP/2 stream (reader thread): route it, and run it
        on a worker once admitted, as ServerConnection does a gRPC call."""
        table = dict(headers)
        method = table.get(b":method", b"").decode("latin-1")
        target = table.get(b":path", b"").decode("utf-8", "replace")
        server = self.server
        if server.stopping or connection.conn.count_open_inbound(before=stream_id) >= \
                server.max_concurrent_streams:
            connection.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        stream = H2HttpStream(self, connection, stream_id)
        prepared = self.prepare(method, target, headers)
        if isinstance(prepared, HttpResponse):
            stream.respond_now(prepared)
            return
        if len(connection.calls) >= server.max_calls_per_connection or not server.admit():
            stream.respond_now(HttpResponse.error(429, "server is at capacity"))
            return
        stream.prepared = prepared
        with connection.lock:
            if not connection.closed:
                connection.calls[stream_id] = cast("ServerCall", stream)
        if stream_id not in connection.calls:
            server.call_finished()  # undo admit()
            return
        server.submit(cast("ServerCall", stream))

    # -- HTTP/1.1 connections (http1.py) -------------------------------------------

    def sniff(self, sock: Any) -> None:
        """A new plaintext connection (loop thread): HTTP/1.1 or the HTTP/2 preface?"""
        from .http1 import Sniffer

        Sniffer(self, sock).start()

    def track(self, connection: Any) -> bool:
        with self._lock:
            if self.server.stopping:
                return False
            self._connections.add(connection)
            return True

    def untrack(self, connection: Any) -> None:
        with self._lock:
            self._connections.discard(connection)

    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def close_all(self, timeout: float = 5.0) -> None:
        """Close every HTTP/1.1 connection and sniffed socket (``Server.stop``)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close_soon()
        deadline = time.monotonic() + timeout
        for connection in connections:
            connection.closed_event.wait(max(0.0, deadline - time.monotonic()))


class BodyInbox:
    """An HTTP/2 request body, gathered whole (the reader thread feeds, the worker
    waits), at most ``limit`` bytes. Mimics what ServerConnection uses of an Inbox.

    ``_done`` is an Event; ``data``/``error`` are written before it is set.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.data = bytearray()
        self.error: RpcError | None = None
        self._done = threading.Event()
        self.decoder = self  # ServerConnection asks inbox.decoder.at_boundary()

    def at_boundary(self) -> bool:
        return True

    def feed(self, data: bytes, flow_controlled: int) -> int:
        if self.error is None and not self._done.is_set():
            if self.limit is not None and len(self.data) + len(data) > self.limit:
                raise RpcError(StatusCode.RESOURCE_EXHAUSTED,
                               f"request body over {self.limit} bytes")
            self.data += data
        return flow_controlled  # bounded by limit: credit goes back at once

    def abandon(self) -> int:
        return 0

    def end(self) -> None:
        self._done.set()

    def fail(self, error: RpcError) -> None:
        if self.error is None:
            self.error = error
        self._done.set()

    def wait(self, timeout: float | None) -> bytes:
        if not self._done.wait(timeout):
            raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                        "the request body did not arrive in time")
        if self.error is not None:
            raise self.error
        return bytes(self.data)


class H2HttpStream:
    """A plain-HTTP unary call on one HTTP/2 stream. It sits in
    ``ServerConnection.calls`` so the stream's DATA, end and reset reach it; it offers
    what the connection uses of a ServerCall (``inbox``, ``cancel``, ``end_now``,
    ``cancel_locally``, ``remote_closed``, ``timer``, ``run``)."""

    def __init__(self, http: HttpUnary, connection: ServerConnection, stream_id: int) -> None:
        self.http = http
        self.transport = connection
        self.stream_id = stream_id
        self.inbox = BodyInbox(http.server.max_receive_message_size)
        self.prepared: Prepared | None = None
        self.remote_closed = False
        self.timer = None
        self.call: HttpCall | None = None
        self._cancelled = False  # read by the worker, set by the reader thread

    # -- what ServerConnection calls -------------------------------------------------

    def cancel(self, error: RpcError) -> None:
        self._cancelled = True
        self.inbox.fail(error)
        if self.call is not None:
            self.call.cancel()

    def end_now(self, error: RpcError, reset: int) -> None:
        """Bad input (an oversize body): the worker answers with ``error``."""
        self.inbox.fail(error)

    def cancel_locally(self) -> None:
        self.transport.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        self.cancel(CancelledError(StatusCode.CANCELLED, "Cancelled by the server"))

    def run(self) -> None:
        prepared = self.prepared
        assert prepared is not None
        try:
            wait = self.http.server.handshake_timeout  # a silent sender is dropped
            if prepared.deadline is not None:
                wait = min(wait, prepared.deadline.remaining())
            try:
                body = self.inbox.wait(wait)
            except RpcError as exc:
                if self._cancelled:
                    return
                status = 413 if exc.code is StatusCode.RESOURCE_EXHAUSTED else \
                    408 if exc.code is StatusCode.DEADLINE_EXCEEDED else http_status(exc.code)
                self.respond(HttpResponse.error(status, exc.details))
                return
            self.call = HttpCall(self.transport, prepared.head, prepared.deadline,
                                 on_cancel=lambda: self.transport.reset_stream(
                                     self.stream_id, h2.errors.ErrorCodes.CANCEL))
            if self._cancelled:
                return
            response = self.http.execute(prepared, body, self.call)
            if not self._cancelled:
                self.respond(response)
        except Exception:
            log.exception("HTTP/2 JSON call %s failed", prepared.head.path)
        finally:
            if self.call is not None:
                self.call.run_callbacks()
            self.transport.call_done(cast("ServerCall", self))

    # -- answering --------------------------------------------------------------------

    def _headers(self, response: HttpResponse) -> list[tuple[str, str]]:
        return [(":status", str(response.status)), ("content-type", response.content_type),
                ("content-length", str(len(response.body)))] + \
            [(k, v) for k, v in response.headers if k != "connection"]

    def respond_now(self, response: HttpResponse) -> None:
        """An early refusal (reader thread, never waits): headers and a small body if
        the window allows. No RST_STREAM(NO_ERROR) after it, unlike gRPC's early close:
        curl drops a response whose stream is reset before it sent its whole body; the
        rest of the body is credited and dropped as it comes."""
        connection = self.transport
        with connection.lock:
            try:
                connection.conn.send_headers(self.stream_id, self._headers(response))
                window = connection.conn.local_flow_control_window(self.stream_id)
                body = response.body if len(response.body) <= window else b""
                connection.conn.send_data(self.stream_id, body, end_stream=True)
            except h2.exceptions.ProtocolError:
                pass  # reset by the peer meanwhile
        try:
            connection.flush()
        except RpcError:
            pass

    def respond(self, response: HttpResponse) -> None:
        """The response, from the worker (may wait for flow control, up to the
        server's send timeout)."""
        connection = self.transport

        def stream_error() -> RpcError | None:
            return self.inbox.error if self._cancelled else None

        try:
            connection.call_h2(connection.conn.send_headers, self.stream_id,
                               self._headers(response))
            connection.send_data(self.stream_id, response.body, True, None, stream_error,
                                 send_timeout=self.http.server.send_timeout)
        except (RpcError, h2.exceptions.ProtocolError):
            return
        if not self.remote_closed:  # answered before the body ended (413): stop the sender
            connection.reset_stream(self.stream_id, h2.errors.ErrorCodes.NO_ERROR)
