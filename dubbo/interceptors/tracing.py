"""OpenTelemetry tracing: a span per call on each side, with the ``rpc.*`` semantic
attributes, and W3C trace context (``traceparent``) carried in the call's metadata.

Needs opentelemetry-api (``pip install 'dubbo[opentelemetry]'``; an SDK to export
spans); imported only when a tracing interceptor is made. Propagation uses the global
propagator (W3C ``traceparent``/``tracestate`` and baggage unless configured
otherwise), so it interoperates with grpcio's and every other gRPC stack's OpenTelemetry
instrumentation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..status import StatusCode
from .base import (
    CallInfo,
    CallResult,
    ClientCallInfo,
    ClientInterceptor,
    Continuation,
    ServerCallInfo,
    ServerInterceptor,
)

__all__ = ["OpenTelemetryInterceptor"]

# Server spans are errors only for these codes (OpenTelemetry's gRPC conventions: the
# others are the client's fault); client spans are errors for every code but OK.
SERVER_ERROR_CODES = frozenset({
    StatusCode.UNKNOWN, StatusCode.DEADLINE_EXCEEDED, StatusCode.UNIMPLEMENTED,
    StatusCode.INTERNAL, StatusCode.UNAVAILABLE, StatusCode.DATA_LOSS,
})


def _opentelemetry() -> Any:
    try:
        from opentelemetry import context, propagate, trace
    except ImportError:
        raise ImportError("dubbo's tracing needs opentelemetry-api: "
                          "pip install 'dubbo[opentelemetry]'") from None
    return context, propagate, trace


class OpenTelemetryInterceptor(ServerInterceptor, ClientInterceptor):
    """A span per call, server side (kind SERVER, child of the caller's
    ``traceparent``) and client side (kind CLIENT, child of the current span; its
    context goes out as ``traceparent``). Named ``pkg.Service/Method``, with
    ``rpc.system`` "grpc", ``rpc.service``, ``rpc.method`` and, once the call
    ended, ``rpc.grpc.status_code``. The span is current while the handler runs
    (including each step of a reply generator) and while a client call starts.

    ``tracer_provider``: default the global one.
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        self._context, self._propagate, self._trace = _opentelemetry()
        from .._version import __version__
        self.tracer = self._trace.get_tracer("dubbo", __version__,
                                             tracer_provider=tracer_provider)

    def _start(self, call: CallInfo, kind: Any, parent: Any) -> Any:
        return self.tracer.start_span(
            f"{call.service}/{call.method_name}", context=parent, kind=kind,
            attributes={"rpc.system": "grpc", "rpc.service": call.service,
                        "rpc.method": call.method_name})

    def _end(self, span: Any, result: CallResult, error: bool) -> None:
        span.set_attribute("rpc.grpc.status_code", int(result.code))
        if error:
            trace = self._trace
            span.set_status(trace.Status(trace.StatusCode.ERROR,
                                         f"{result.code.name}: {result.details}"))
        span.end()

    def intercept_server(self, continuation: Continuation, request: Any,
                         call: ServerCallInfo) -> Any:
        carrier: dict[str, list[str]] = {}
        for key, value in call.metadata:
            if isinstance(value, str):
                carrier.setdefault(key, []).append(value)
        parent = self._propagate.extract(carrier)
        span = self._start(call, self._trace.SpanKind.SERVER, parent)
        call.add_done_callback(
            lambda result: self._end(span, result, result.code in SERVER_ERROR_CODES))
        current = self._trace.set_span_in_context(span, parent)
        result = self._run(continuation, request, current, span)
        if call.call_type.response_streaming:
            return self._replies(result, current, span)
        return result

    def intercept_client(self, continuation: Continuation, request: Any,
                         call: ClientCallInfo) -> Any:
        span = self._start(call, self._trace.SpanKind.CLIENT, None)
        call.add_done_callback(lambda result: self._end(span, result, not result.ok))
        current = self._trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=current)
        call.metadata.extend(carrier.items())
        return self._run(continuation, request, current, span)

    def _run(self, continuation: Continuation, request: Any, current: Any, span: Any) -> Any:
        token = self._context.attach(current)
        try:
            return continuation(request)
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            self._context.detach(token)

    def _replies(self, replies: Iterable[Any], current: Any, span: Any) -> Iterator[Any]:
        """The handler's replies, each made with the span current."""
        iterator = iter(replies)
        try:
            while True:
                token = self._context.attach(current)
                try:
                    reply = next(iterator)
                except StopIteration:
                    return
                except Exception as exc:
                    span.record_exception(exc)
                    raise
                finally:
                    self._context.detach(token)
                yield reply
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
