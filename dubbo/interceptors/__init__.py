"""Interceptors: code around every call of a server or a client (docs/interceptors.md).

``ServerInterceptor``/``ClientInterceptor`` are the base classes; ``LoggingInterceptor``
and the bearer-token pair are built on them, as are the optional Prometheus metrics
(``dubbo.interceptors.metrics``, needs prometheus-client) and OpenTelemetry tracing
(``dubbo.interceptors.tracing``, needs opentelemetry-api).
"""

from __future__ import annotations

from .auth import BearerTokenClientInterceptor, BearerTokenServerInterceptor
from .base import (
    CallInfo,
    CallResult,
    ClientCallInfo,
    ClientInterceptor,
    ServerCallInfo,
    ServerInterceptor,
)
from .log import LoggingInterceptor

__all__ = [
    "BearerTokenClientInterceptor",
    "BearerTokenServerInterceptor",
    "CallInfo",
    "CallResult",
    "ClientCallInfo",
    "ClientInterceptor",
    "LoggingInterceptor",
    "ServerCallInfo",
    "ServerInterceptor",
]
