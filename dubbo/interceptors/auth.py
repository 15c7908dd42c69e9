"""Bearer tokens: the client sends ``authorization: Bearer <token>``, the server checks
it with a function of the user's before the handler runs (UNAUTHENTICATED if not)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ..status import StatusCode
from .base import ClientCallInfo, ClientInterceptor, Continuation, ServerCallInfo, ServerInterceptor

__all__ = ["BearerTokenClientInterceptor", "BearerTokenServerInterceptor"]

log = logging.getLogger("dubbo.interceptors")

# Kubernetes-style probes call the health service without credentials.
DEFAULT_EXEMPT = ("/grpc.health.v1.Health/",)


class BearerTokenServerInterceptor(ServerInterceptor):
    """Runs a call only if its ``authorization`` metadata is ``Bearer <token>`` and
    ``verify(token)`` is true; else it ends with UNAUTHENTICATED and the handler does
    not run. ``verify`` raising counts as false (and is logged).

    ``exempt``: method path prefixes served without a token (default: the health
    service; pass ``()`` to check every call).
    """

    def __init__(self, verify: Callable[[str], object], *,
                 exempt: Iterable[str] = DEFAULT_EXEMPT) -> None:
        self.verify = verify
        self.exempt = tuple(exempt)

    def intercept_server(self, continuation: Continuation, request: Any,
                         call: ServerCallInfo) -> Any:
        if self.exempt and call.method.startswith(self.exempt):
            return continuation(request)
        value = next((v for k, v in call.metadata if k == "authorization"), None)
        if not isinstance(value, str) or value[:7].lower() != "bearer " or not value[7:].strip():
            call.abort(StatusCode.UNAUTHENTICATED, "missing bearer token")
        try:
            accepted = self.verify(value[7:].strip())
        except Exception:
            log.exception("token check of %s failed", call.method)
            accepted = False
        if not accepted:
            call.abort(StatusCode.UNAUTHENTICATED, "invalid token")
        return continuation(request)


class BearerTokenClientInterceptor(ClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call; ``token`` may be a
    function, called for each call (a token that is refreshed)."""

    def __init__(self, token: str | Callable[[], str]) -> None:
        self.token = token

    def intercept_client(self, continuation: Continuation, request: Any,
                         call: ClientCallInfo) -> Any:
        token = self.token() if callable(self.token) else self.token
        call.metadata.append(("authorization", f"Bearer {token}"))
        return continuation(request)
