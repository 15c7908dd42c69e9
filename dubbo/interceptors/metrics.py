"""Prometheus metrics as the grpc-ecosystem interceptors name and label them
(go-grpc-prometheus, py-grpc-prometheus), so their dashboards and alerts work as is.

Needs prometheus-client (``pip install 'dubbo[prometheus]'``); imported only when a
metrics interceptor is made.

Server: ``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_msg_received_total``, ``grpc_server_msg_sent_total`` and the histogram
``grpc_server_handling_seconds``; the client's are the ``grpc_client_*`` twins. Labels:
``grpc_type`` (UNARY, CLIENT_STREAM, SERVER_STREAM, BIDI_STREAM), ``grpc_service``,
``grpc_method``, and on ``*_handled_total`` ``grpc_code`` (the status name, "OK").
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .base import (
    CallInfo,
    CallResult,
    ClientCallInfo,
    ClientInterceptor,
    Continuation,
    ServerCallInfo,
    ServerInterceptor,
)

__all__ = ["ClientMetricsInterceptor", "DEFAULT_BUCKETS", "ServerMetricsInterceptor"]

# Prometheus' Go client DefBuckets, which go-grpc-prometheus's histograms use.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LABELS = ("grpc_type", "grpc_service", "grpc_method")

_HELP = {
    "server": {
        "started": "Total number of RPCs started on the server.",
        "handled": "Total number of RPCs completed on the server, regardless of success "
                   "or failure.",
        "msg_received": "Total number of RPC stream messages received on the server.",
        "msg_sent": "Total number of gRPC stream messages sent by the server.",
        "handling": "Histogram of response latency (seconds) of gRPC that had been "
                    "application-level handled by the server.",
    },
    "client": {
        "started": "Total number of RPCs started on the client.",
        "handled": "Total number of RPCs completed by the client, regardless of success "
                   "or failure.",
        "msg_received": "Total number of RPC stream messages received by the client.",
        "msg_sent": "Total number of gRPC stream messages sent by the client.",
        "handling": "Histogram of response latency (seconds) of the gRPC until it is "
                    "finished by the application.",
    },
}


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError("dubbo's Prometheus metrics need prometheus-client: "
                          "pip install 'dubbo[prometheus]'") from None
    return prometheus_client


class _Metrics:
    """One side's five metrics in one registry."""

    def __init__(self, side: str, registry: Any, buckets: Sequence[float]) -> None:
        prometheus = _prometheus()
        names = _HELP[side]
        prefix = f"grpc_{side}_"

        def counter(name: str, labels: Sequence[str] = LABELS) -> Any:
            return prometheus.Counter(f"{prefix}{name}_total", names[name], labels,
                                      registry=registry)

        self.started = counter("started")
        self.handled = counter("handled", LABELS + ("grpc_code",))
        self.msg_received = counter("msg_received")
        self.msg_sent = counter("msg_sent")
        self.handling = prometheus.Histogram(f"{prefix}handling_seconds", names["handling"],
                                             LABELS, registry=registry, buckets=buckets)


# Metrics already registered, per registry and side: a second interceptor (another
# server or client) shares them instead of failing with "Duplicated timeseries".
_registered: weakref.WeakKeyDictionary[Any, dict[str, _Metrics]] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def _metrics(side: str, registry: Any, buckets: Sequence[float]) -> _Metrics:
    prometheus = _prometheus()  # first: without it, say what to install
    if registry is None:
        registry = prometheus.REGISTRY
    with _registered_lock:
        per_side = _registered.setdefault(registry, {})
        metrics = per_side.get(side)
        if metrics is None:
            metrics = per_side[side] = _Metrics(side, registry, buckets)
        return metrics


class _MetricsInterceptor:
    side = ""

    def __init__(self, registry: Any = None, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        """``registry``: a ``prometheus_client.CollectorRegistry`` (default: the global
        ``REGISTRY``); ``buckets``: the handling-time histogram's, in seconds."""
        self.metrics = _metrics(self.side, registry, tuple(buckets))

    def _observe(self, continuation: Continuation, request: Any, call: CallInfo,
                 sends: Any, receives: Any) -> Any:
        """Count the call around ``continuation``; ``sends``/``receives`` count the
        messages this side sends and receives."""
        metrics = self.metrics
        labels = (call.grpc_type, call.service, call.method_name)
        metrics.started.labels(*labels).inc()

        def done(result: CallResult) -> None:
            metrics.handled.labels(*labels, result.code.name).inc()
            metrics.handling.labels(*labels).observe(result.latency)

        call.add_done_callback(done)
        request_streaming = call.call_type.request_streaming
        response_streaming = call.call_type.response_streaming
        side_sends_requests = self.side == "client"
        outgoing = sends.labels(*labels)
        incoming = receives.labels(*labels)
        if request_streaming:
            request = _counted(request, outgoing if side_sends_requests else incoming)
        elif not side_sends_requests:
            incoming.inc()  # the server got its one request
        else:
            outgoing.inc()
        result = continuation(request)
        if response_streaming:
            return _counted(result, incoming if side_sends_requests else outgoing)
        (incoming if side_sends_requests else outgoing).inc()  # the one reply
        return result


def _counted(messages: Iterable[Any], counter: Any) -> Iterator[Any]:
    for message in _delegate(messages):
        counter.inc()
        yield message


def _delegate(messages: Iterable[Any]) -> Iterator[Any]:
    yield from messages  # passes close() on to a generator


class ServerMetricsInterceptor(_MetricsInterceptor, ServerInterceptor):
    """``grpc_server_*`` metrics for every call a server handles. A reply counts as
    sent when the handler hands it over (as go-grpc-prometheus counts it)."""

    side = "server"

    def intercept_server(self, continuation: Continuation, request: Any,
                         call: ServerCallInfo) -> Any:
        metrics = self.metrics
        return self._observe(continuation, request, call, metrics.msg_sent,
                             metrics.msg_received)


class ClientMetricsInterceptor(_MetricsInterceptor, ClientInterceptor):
    """``grpc_client_*`` metrics for every call a client makes."""

    side = "client"

    def intercept_client(self, continuation: Continuation, request: Any,
                         call: ClientCallInfo) -> Any:
        metrics = self.metrics
        return self._observe(continuation, request, call, metrics.msg_sent,
                             metrics.msg_received)
