"""What an interceptor is, and what it knows about the call it wraps.

An interceptor sees every call of a server (``dubbo.Server(config, interceptors=[...])``)
or of a client (``dubbo.Client(reference, interceptors=[...])``), of all four kinds,
through one method::

    class Timing(ServerInterceptor):
        def intercept_server(self, continuation, request, call):
            call.add_done_callback(lambda result: print(call.method, result.code.name,
                                                        result.latency))
            return continuation(request)

``request`` is the request message, or for client-stream and bidi calls the request
iterator; ``continuation(request)`` runs the rest of the chain (the next interceptor,
at the end the handler or the remote call) and returns the reply, or for server-stream
and bidi calls the reply iterator. An interceptor may wrap either iterator (to count or
look at messages), add metadata, raise ``RpcError`` (or call ``call.abort()``) to end
the call with a status without going on, and register ``add_done_callback`` functions
that get the call's final status and latency however it ends.

The first interceptor in the list is the outermost: it runs first on the way in and
its done callbacks run last (as grpcio orders its interceptors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from ..proxy.handlers import CallType
from ..status import RpcError, StatusCode
from ..wire.metadata import MetadataLike
from ..wire.metadata import metadata_pairs as metadata_list  # re-exported

if TYPE_CHECKING:  # pragma: no cover
    from ..server.context import ServicerContext

__all__ = ["CallInfo", "CallResult", "ClientCallInfo", "ClientInterceptor", "GRPC_TYPES",
           "ServerCallInfo", "ServerInterceptor", "metadata_list"]

log = logging.getLogger("dubbo.interceptors")

# The grpc_type label of the grpc-ecosystem Prometheus interceptors, per call kind.
GRPC_TYPES = {
    CallType.UNARY: "UNARY",
    CallType.CLIENT_STREAM: "CLIENT_STREAM",
    CallType.SERVER_STREAM: "SERVER_STREAM",
    CallType.BI_STREAM: "BIDI_STREAM",
}

Metadata = list[tuple[str, Any]]


@dataclass(frozen=True)
class CallResult:
    """How a call ended: its status and how long it took (seconds, from the moment the
    first interceptor saw it)."""

    code: StatusCode
    details: str
    latency: float

    @property
    def ok(self) -> bool:
        return self.code is StatusCode.OK


class CallInfo:
    """One call as interceptors see it. Shared by every interceptor of the chain.

    ``metadata`` is a list of ``(key, value)`` pairs an interceptor may add to: on a
    server, the request metadata (the interceptors after it and the handler see the
    additions in ``context.invocation_metadata()``); on a client, the metadata the
    request goes out with.
    """

    side = ""

    def __init__(self, service: str, method_name: str, call_type: CallType,
                 metadata: Metadata) -> None:
        self.service = service
        self.method_name = method_name
        self.method = f"/{service}/{method_name}"
        self.call_type = call_type
        self.metadata = metadata
        self.started = time.perf_counter()
        self.result: CallResult | None = None  # set once, when the call ends
        self._lock = threading.Lock()  # guards result and _done_callbacks
        self._done_callbacks: list[Callable[[CallResult], object]] = []

    @property
    def grpc_type(self) -> str:
        """``UNARY``, ``CLIENT_STREAM``, ``SERVER_STREAM`` or ``BIDI_STREAM``."""
        return GRPC_TYPES[self.call_type]

    @property
    def peer(self) -> str:
        return ""

    def add_done_callback(self, callback: Callable[[CallResult], object]) -> None:
        """Run ``callback(result)`` once the call has ended, however it ends (at once if
        it already has). Callbacks run innermost interceptor first; one that raises is
        logged and the rest still run."""
        with self._lock:
            result = self.result
            if result is None:
                self._done_callbacks.append(callback)
                return
        _run(callback, result)

    def abort(self, code: StatusCode, details: str = "") -> NoReturn:
        """End the call with ``code``: raises ``RpcError``; the rest of the chain does not
        run."""
        if StatusCode(code) is StatusCode.OK:
            raise ValueError("abort() needs a non-OK status code")
        raise RpcError(code, details)

    def finish(self, code: StatusCode, details: str) -> bool:
        """Record the final status and run the done callbacks; False if already ended.
        Called by the framework, once per call."""
        with self._lock:
            if self.result is not None:
                return False
            self.result = CallResult(StatusCode(code), details or "",
                                     time.perf_counter() - self.started)
            callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in reversed(callbacks):  # innermost first, like unwinding
            _run(callback, self.result)
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.grpc_type} {self.method}>"


def _run(callback: Callable[[CallResult], object], result: CallResult) -> None:
    try:
        callback(result)
    except Exception:
        log.exception("interceptor done callback %r failed", callback)


class ServerCallInfo(CallInfo):
    """A call a server received. ``context`` is the one the handler gets."""

    side = "server"

    def __init__(self, service: str, method_name: str, call_type: CallType,
                 metadata: Metadata, context: ServicerContext) -> None:
        super().__init__(service, method_name, call_type, metadata)
        self.context = context
        # Added by interceptors, sent with the handler's own (guarded by the GIL: one
        # call's interceptors and handler run on one thread).
        self.initial_metadata: Metadata = []
        self.trailing_metadata: Metadata = []
        self.initial_metadata_sent = False

    @property
    def peer(self) -> str:
        return self.context.peer()

    def add_initial_metadata(self, metadata: MetadataLike | Mapping[str, Any]) -> None:
        """Send these pairs in the response headers, with any the handler sends."""
        if self.initial_metadata_sent:
            raise RuntimeError("initial metadata already sent")
        self.initial_metadata.extend(metadata_list(metadata))

    def add_trailing_metadata(self, metadata: MetadataLike | Mapping[str, Any]) -> None:
        """Send these pairs with the status (on errors too), with any the handler sets."""
        self.trailing_metadata.extend(metadata_list(metadata))
        set_trailing = getattr(self.context, "_merge_trailing_metadata", None)
        if set_trailing is not None:
            set_trailing()


class ClientCallInfo(CallInfo):
    """A call a client makes. ``timeout`` (seconds or None) and ``metadata`` may be
    changed before ``continuation`` is called; ``call`` is the underlying call
    (``dubbo.client.Call`` or ``ResponseIterator``) once the continuation made it."""

    side = "client"

    def __init__(self, service: str, method_name: str, call_type: CallType,
                 metadata: Metadata, timeout: float | None, target: str) -> None:
        super().__init__(service, method_name, call_type, metadata)
        self.timeout = timeout
        self.call: Any = None
        self._target = target

    @property
    def peer(self) -> str:
        """The provider's address once the call is on a connection, else the target."""
        transport = getattr(getattr(self.call, "_call", None), "transport", None)
        return getattr(transport, "peer", None) or self._target


Continuation = Callable[[Any], Any]


class ServerInterceptor:
    """Wraps every call a server handles; override ``intercept_server``."""

    def intercept_server(self, continuation: Continuation, request: Any,
                         call: ServerCallInfo) -> Any:
        """Return ``continuation(request)``, or what stands in for it."""
        return continuation(request)


class ClientInterceptor:
    """Wraps every call a client makes; override ``intercept_client``."""

    def intercept_client(self, continuation: Continuation, request: Any,
                         call: ClientCallInfo) -> Any:
        """Return ``continuation(request)``, or what stands in for it."""
        return continuation(request)


def run_chain(interceptors: Iterable[Any], method: str, core: Continuation, request: Any,
              call: CallInfo) -> Any:
    """``interceptors[0].<method>(next, request, call)``, where ``next`` runs the rest
    of the chain and finally ``core``."""
    continuation = core
    for interceptor in reversed(list(interceptors)):
        continuation = _link(getattr(interceptor, method), continuation, call)
    return continuation(request)


def _link(intercept: Callable[[Continuation, Any, Any], Any], continuation: Continuation,
          call: CallInfo) -> Continuation:
    return lambda request: intercept(continuation, request, call)
