"""JSON on the server: ``application/grpc+json`` calls, and unary calls as plain HTTP
the way Dubbo Java 3.3 answers them (PROTOCOL.md §6), over HTTP/2 (a request whose
content-type is not ``application/grpc*``) and HTTP/1.1 (``http1.py``)::

    curl -H 'content-type: application/json' -d '{"name":"x"}' http://127.0.0.1:50051/pkg.Greeter/SayHello

Success is ``200`` with the reply as JSON; a failure is the HTTP status Java maps the
gRPC code to, with ``{"status":"<http status>","message":"..."}``. Only unary methods
are reachable this way; their message types must be known (``json_codec``). The
HTTP/2 side of it is ``http2.py``, the HTTP/1.1 side ``http1.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..proxy.handlers import CallType, RpcMethodHandler, RpcServiceHandler
from ..status import DeadlineExceededError, RpcError, StatusCode
from ..wire import json_codec
from ..wire.deadline import Deadline
from ..wire.metadata import MetadataLike, RequestHead, decode_metadata, encode_metadata
from .context import ServicerContext

if TYPE_CHECKING:  # pragma: no cover
    from ..call.server_stream import ServerStream
    from .server import Server, ServerConnection

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
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the client preface (RFC 9113 §3.4)


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


class HttpReply(Protocol):
    """What ``HttpUnary.execute`` uses of a call: ``HttpCall`` (HTTP/1.1) or
    ``http2.H2HttpCall``."""

    @property
    def head(self) -> RequestHead: ...
    @property
    def deadline(self) -> Deadline | None: ...
    @property
    def context(self) -> ServicerContext: ...
    @property
    def initial_metadata(self) -> list[tuple[str, str]]: ...
    @property
    def trailing_metadata(self) -> list[tuple[str, str]]: ...


class HttpCall:
    """An HTTP/1.1 unary call, as its ``ServicerContext`` sees it (``http1.py``).

    ``_lock`` guards ``status`` and ``_callbacks``; the rest belongs to the worker.
    """

    def __init__(self, transport: Any, head: RequestHead, deadline: Deadline | None) -> None:
        self.transport = transport  # has .peer and .tls, as a ServerConnection
        self.head = head
        self.deadline = deadline
        self.initial_metadata: list[tuple[str, str]] = []
        self.trailing_metadata: list[tuple[str, str]] = []
        self.status: tuple[StatusCode, str] | None = None  # set once cancelled
        self._callbacks: list[Callable[[], Any]] | None = []
        self._lock = threading.Lock()
        self.context = ServicerContext(self)

    @property
    def final_status(self) -> tuple[StatusCode, str] | None:
        """Why the call was cut off, if it was (else the interceptors saw the status)."""
        return self.status

    def is_active(self) -> bool:
        if self.status is not None:
            return False
        return self.deadline is None or not self.deadline.expired()

    def cancel(self) -> None:
        """The peer left (or the server gave up): the handler's context says so."""
        with self._lock:
            self.status = self.status or (StatusCode.CANCELLED, "Cancelled")
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
        """context.cancel(): the handler's context says so; the answer still goes."""
        self.cancel()


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

    def execute(self, method: JsonMethod, body: bytes, call: HttpReply) -> HttpResponse:
        """Run the handler (on a worker thread) and build the response."""
        handler = method.handler
        context = call.context
        path = call.head.path
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
            if call.deadline is not None and call.deadline.expired():
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

    def start_h2_stream(self, connection: ServerConnection, stream: ServerStream,
                        headers: list[tuple[bytes, bytes]]) -> None:
        """A non-gRPC request on an HTTP/2 stream (loop thread): ``http2.py``."""
        from .http2 import start_h2_call  # it subclasses ServerCall (server.py imports us)

        start_h2_call(self, connection, stream, headers)

    # -- HTTP/1.1 connections (http1.py) -------------------------------------------

    def sniff(self, sock: Any) -> None:
        """A new plaintext connection (loop thread): HTTP/1.1 or the HTTP/2 preface?"""
        # A gRPC client's preface is usually there by the time we accept: then the
        # HTTP/2 connection starts at once (its SETTINGS go out now), with no sniffer,
        # no timer and no second registration with the loop.
        try:
            first = sock.recv(len(H2_PREFACE), socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # nothing yet (or an error, which the sniffer meets again)
            first = b""
        if first == H2_PREFACE:
            self.server.accept(sock, sniffed=True)
            return
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
