"""Server interceptors around each method handler, put there when a service is
registered (``Server.add_service``): no part of the call machinery knows of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..proxy.handlers import RpcMethodHandler, RpcServiceHandler
from ..server.context import ServicerContext
from ..status import Details, RpcError, StatusCode
from ..wire.metadata import MetadataLike
from .base import ServerCallInfo, ServerInterceptor, metadata_list, run_chain

__all__ = ["InterceptedContext", "intercept_handler", "intercept_service"]


def intercept_service(service: RpcServiceHandler,
                      interceptors: Sequence[ServerInterceptor]) -> RpcServiceHandler:
    """A copy of ``service`` whose every method runs through ``interceptors``."""
    if not interceptors:
        return service
    handlers = {name: intercept_handler(handler, service.service_name, interceptors)
                for name, handler in service.method_handlers.items()}
    wrapped = RpcServiceHandler(service.service_name, handlers,
                                getattr(service, "file_descriptor", None))
    for key, value in vars(service).items():  # anything else a service carries along
        if key not in vars(wrapped):
            setattr(wrapped, key, value)
    return wrapped


def intercept_handler(handler: RpcMethodHandler, service: str,
                      interceptors: Sequence[ServerInterceptor]) -> RpcMethodHandler:
    """``handler`` with ``interceptors`` around it; the same call type and
    (de)serializers, and it always takes the context."""
    chain = tuple(interceptors)
    behavior = handler.behavior
    takes_context = handler.takes_context
    call_type = handler.call_type
    method_name = handler.method_name

    def run(request: Any, context: ServicerContext) -> Any:
        call = ServerCallInfo(service, method_name, call_type,
                              list(context.invocation_metadata()), context)
        call.context = proxy = InterceptedContext(context, call)
        outcome = _Outcome(call, context)
        if not context.add_callback(outcome.call_ended):
            outcome.call_ended()  # the call was over before its handler started

        def core(req: Any) -> Any:
            return behavior(req, proxy) if takes_context else behavior(req)

        try:
            result = run_chain(chain, "intercept_server", core, request, call)
        except RpcError as exc:
            outcome.saw(exc.code, exc.details)
            proxy._merge_trailing_metadata(exc.trailing_metadata)
            raise
        except Exception as exc:
            outcome.saw(StatusCode.UNKNOWN, f"Exception calling application: {exc}")
            raise
        if call_type.response_streaming:
            return outcome.replies(result, proxy)
        proxy._send_pending_initial_metadata()
        outcome.saw(StatusCode.OK, "")
        return result

    return dataclasses.replace(handler, behavior=run, takes_context=True)


class _Outcome:
    """Finishes a call's ``ServerCallInfo`` when the call ends. The status is the one
    the call ended with (``context.final_status()``: a deadline or a client's cancel
    can end a call whose handler returned), else what the handler ended with."""

    __slots__ = ("call", "context", "seen")

    def __init__(self, call: ServerCallInfo, context: ServicerContext) -> None:
        self.call = call
        self.context = context
        self.seen: tuple[StatusCode, str] | None = None

    def saw(self, code: StatusCode, details: str) -> None:
        if self.seen is None:
            self.seen = (code, details)

    def call_ended(self) -> None:
        final_status = getattr(self.context, "final_status", None)
        status = final_status() if final_status is not None else None
        if status is None:
            if self.seen is not None and self.seen[0] is StatusCode.OK:
                code = getattr(self.context, "code", None)
                status = (code, self.context.details) if code is not None else self.seen
            else:
                status = self.seen or (StatusCode.CANCELLED, "call ended before its handler")
        self.call.finish(*status)

    def replies(self, result: Any, proxy: InterceptedContext) -> Iterator[Any]:
        """The reply iterator, noting how it ends; ``close()`` reaches the handler's."""
        try:
            for reply in _delegate(result):
                proxy._send_pending_initial_metadata()
                yield reply
            proxy._send_pending_initial_metadata()
        except RpcError as exc:
            self.saw(exc.code, exc.details)
            proxy._merge_trailing_metadata(exc.trailing_metadata)
            raise
        except GeneratorExit:
            self.saw(StatusCode.CANCELLED, "replies abandoned")
            raise
        except Exception as exc:
            self.saw(StatusCode.UNKNOWN, f"Exception iterating responses: {exc}")
            raise
        self.saw(StatusCode.OK, "")


def _delegate(result: Any) -> Iterator[Any]:
    # ``yield from`` passes close() (and throw()) on to a generator handler.
    yield from result


class InterceptedContext(ServicerContext):
    """The context the interceptors and the handler get: the call's own context, whose
    metadata also carries what interceptors added (``ServerCallInfo.metadata`` for the
    request, ``add_initial_metadata``/``add_trailing_metadata`` for the response).
    Everything else goes to the call's context."""

    __slots__ = ("_inner", "_info", "_handler_trailing")

    def __init__(self, inner: ServicerContext, info: ServerCallInfo) -> None:
        # No super().__init__(): every attribute not set here is the inner context's.
        self._inner = inner
        self._info = info
        self._handler_trailing: list[tuple[str, Any]] | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "_inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self._inner, name)

    @property
    def code(self) -> StatusCode | None:
        return self._inner.code

    @code.setter
    def code(self, value: StatusCode | None) -> None:
        self._inner.code = value

    @property
    def details(self) -> Details:
        return self._inner.details

    @details.setter
    def details(self, value: str | None) -> None:
        self._inner.set_details(value)

    def set_code(self, code: Any) -> None:
        self._inner.set_code(code)

    def set_details(self, details: str | None) -> None:
        self._inner.set_details(details)

    def invocation_metadata(self) -> list[tuple[str, str | bytes]]:
        return list(self._info.metadata)

    def send_initial_metadata(self, metadata: MetadataLike) -> None:
        info = self._info
        if info.initial_metadata_sent:
            raise RuntimeError("initial metadata already sent")
        self._inner.send_initial_metadata(info.initial_metadata + metadata_list(metadata))
        info.initial_metadata_sent = True

    def _send_pending_initial_metadata(self) -> None:
        """Before the first reply: what interceptors added, if the handler sent none."""
        info = self._info
        if info.initial_metadata and not info.initial_metadata_sent:
            self.send_initial_metadata(())

    def set_trailing_metadata(self, metadata: MetadataLike) -> None:
        self._handler_trailing = metadata_list(metadata)
        self._inner.set_trailing_metadata(self._info.trailing_metadata + self._handler_trailing)

    def _merge_trailing_metadata(self, error_metadata: Any = None) -> None:
        """Interceptors' trailing metadata, then the handler's (or the error's, as the
        call itself would have picked), as the call's trailing metadata."""
        added = self._info.trailing_metadata
        if not added:
            return
        own = self._handler_trailing
        if own is None:
            own = metadata_list(error_metadata)
        self._inner.set_trailing_metadata(added + own)

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        return self._inner.add_callback(callback)
