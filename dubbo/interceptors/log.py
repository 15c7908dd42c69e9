"""One log line per call, on either side: method, status, latency and peer."""

from __future__ import annotations

import logging
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

__all__ = ["LoggingInterceptor"]


class LoggingInterceptor(ServerInterceptor, ClientInterceptor):
    """Logs every call when it ends, e.g.
    ``server /pkg.Greeter/SayHello OK 1.2 ms peer=ipv4:127.0.0.1:53211``; a failed
    call adds its details. Works as a server and as a client interceptor.

    ``logger`` defaults to ``dubbo.access``; ``level`` is used for OK calls and
    ``error_level`` (default: ``level``) for the others.
    """

    def __init__(self, logger: logging.Logger | str = "dubbo.access", level: int = logging.INFO,
                 error_level: int | None = None) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.error_level = level if error_level is None else error_level

    def intercept_server(self, continuation: Continuation, request: Any,
                         call: ServerCallInfo) -> Any:
        call.add_done_callback(lambda result: self.log(call, result))
        return continuation(request)

    def intercept_client(self, continuation: Continuation, request: Any,
                         call: ClientCallInfo) -> Any:
        call.add_done_callback(lambda result: self.log(call, result))
        return continuation(request)

    def log(self, call: CallInfo, result: CallResult) -> None:
        level = self.level if result.ok else self.error_level
        if not self.logger.isEnabledFor(level):
            return
        details = "" if result.ok or not result.details else f" {result.details!r}"
        self.logger.log(level, "%s %s %s%s %.1f ms peer=%s", call.side, call.method,
                        result.code.name, details, result.latency * 1000, call.peer)
