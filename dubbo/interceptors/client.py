"""Client interceptors around the callables ``Client.unary()`` and its siblings return.

The intercepted method is the same class with ``__call__`` run through the chain; for
server-stream and bidi calls the caller gets an ``InterceptedResponseIterator``, which
is still the call (``cancel()``, ``code()``, metadata) and notes how the call ends:
the last reply, an error, ``cancel()``, or being dropped unread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar, cast

from ..client.client import ResponseIterator, _Method
from ..proxy.handlers import CallType
from ..status import CancelledError, RpcError, StatusCode
from .base import ClientCallInfo, ClientInterceptor, metadata_list, run_chain

__all__ = ["InterceptedResponseIterator", "intercept_method"]

M = TypeVar("M", bound=_Method)

_FAILSAFE = object()  # a failsafe call's swallowed failure: no call, no reply
_classes: dict[type, type] = {}  # method class -> its intercepted subclass
_classes_lock = threading.Lock()


def intercept_method(method: M, interceptors: Sequence[ClientInterceptor]) -> M:
    """``method`` (just made by a Client factory) with ``interceptors`` around its calls."""
    if not interceptors:
        return method
    cls = type(method)
    with _classes_lock:
        intercepted = _classes.get(cls)
        if intercepted is None:
            mixin = _StreamingCalls if cls.response_streaming else _SingleReplyCalls
            intercepted = _classes[cls] = type(f"Intercepted{cls.__name__}", (mixin, cls), {})
    method.__class__ = intercepted
    cast(Any, method)._interceptors = tuple(interceptors)
    return method


def _call_type(method: _Method) -> CallType:
    if method.request_streaming:
        return CallType.BI_STREAM if method.response_streaming else CallType.CLIENT_STREAM
    return CallType.SERVER_STREAM if method.response_streaming else CallType.UNARY


def _new_call(method: _Method, metadata: Any, timeout: float | None) -> ClientCallInfo:
    client = method._client
    reference = client.reference
    target = ",".join(f"{host}:{port}" for host, port in reference.addresses)
    return ClientCallInfo(reference.service or "", method.method_name, _call_type(method),
                          metadata_list(metadata), timeout, target)


def _failed(call: ClientCallInfo, exc: BaseException) -> None:
    if isinstance(exc, RpcError):
        call.finish(exc.code, exc.details)
    elif isinstance(exc, KeyboardInterrupt):
        call.finish(StatusCode.CANCELLED, "interrupted")
    else:
        call.finish(StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


class _SingleReplyCalls:
    """Unary and client-stream calls: the status is known when the call returns."""

    _interceptors: tuple[ClientInterceptor, ...]

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None,
                 with_call: bool = False, *args: Any, **kwargs: Any) -> Any:
        method = cast(_Method, self)
        call = _new_call(method, metadata, timeout)
        invoke = super().__call__  # type: ignore[misc]

        def core(req: Any) -> Any:
            reply, rpc = invoke(req, call.timeout, call.metadata, True, *args, **kwargs)
            call.call = rpc if rpc is not None else _FAILSAFE
            return reply

        try:
            reply = run_chain(self._interceptors, "intercept_client", core, request, call)
        except BaseException as exc:
            _failed(call, exc)
            raise
        rpc = call.call
        if rpc is _FAILSAFE:  # the cluster's failsafe strategy swallowed an error
            rpc = call.call = None
            call.finish(StatusCode.UNKNOWN, "call failed (error ignored: failsafe)")
        elif rpc is None:  # an interceptor answered without calling on
            call.finish(StatusCode.OK, "")
        else:
            call.finish(rpc.code() or StatusCode.OK, rpc.details() or "")
        return (reply, rpc) if with_call else reply


class _StreamingCalls:
    """Server-stream and bidi calls: the status is known when the replies end."""

    _interceptors: tuple[ClientInterceptor, ...]

    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None,
                 *args: Any, **kwargs: Any) -> InterceptedResponseIterator:
        method = cast(_Method, self)
        call = _new_call(method, metadata, timeout)
        invoke = super().__call__  # type: ignore[misc]

        def core(req: Any) -> Any:
            call.call = invoke(req, call.timeout, call.metadata, *args, **kwargs)
            return call.call

        try:
            replies = run_chain(self._interceptors, "intercept_client", core, request, call)
        except BaseException as exc:
            if call.call is not None and call.call.is_active():
                call.call.cancel()  # an interceptor failed after the call started
            _failed(call, exc)
            raise
        return InterceptedResponseIterator(replies, call)


class InterceptedResponseIterator(ResponseIterator):
    """The replies as the interceptors returned them; the call methods are those of
    the underlying call (``info.call``)."""

    def __init__(self, replies: Any, info: ClientCallInfo) -> None:
        # No super().__init__(): the underlying ResponseIterator is the call.
        self._replies = iter(replies)
        self._info = info

    def __getattr__(self, name: str) -> Any:
        if name in ("_info", "_replies"):
            raise AttributeError(name)
        rpc = self._info.call
        if rpc is None:
            raise AttributeError(name)
        return getattr(rpc, name)

    def __next__(self) -> Any:
        info = self._info
        try:
            return next(self._replies)
        except StopIteration:
            rpc = info.call
            code = rpc.code() if rpc is not None else None
            info.finish(code or StatusCode.OK, (rpc.details() if rpc is not None else "") or "")
            raise
        except BaseException as exc:
            _failed(info, exc)
            raise

    def initial_metadata(self) -> list[tuple[str, str | bytes]]:
        rpc = self._info.call
        return [] if rpc is None else rpc.initial_metadata()

    def trailing_metadata(self) -> list[tuple[str, str | bytes]] | None:
        rpc = self._info.call
        return None if rpc is None else rpc.trailing_metadata()

    def code(self) -> StatusCode | None:
        rpc = self._info.call
        if rpc is None:
            result = self._info.result
            return None if result is None else result.code
        return rpc.code()  # type: ignore[no-any-return]

    def details(self) -> str | None:
        rpc = self._info.call
        if rpc is None:
            result = self._info.result
            return None if result is None else result.details
        return rpc.details()  # type: ignore[no-any-return]

    def is_active(self) -> bool:
        return self._info.result is None

    def time_remaining(self) -> float | None:
        rpc = self._info.call
        return None if rpc is None else rpc.time_remaining()

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM CANCEL); False if it had already ended."""
        rpc = self._info.call
        cancelled = rpc.cancel() if rpc is not None else self._info.result is None
        close = getattr(self._replies, "close", None)
        if close is not None:  # run the interceptors' generators' finally blocks
            try:
                close()
            except Exception:
                pass
        error = CancelledError(StatusCode.CANCELLED, "Cancelled by the caller")
        self._info.finish(error.code, error.details)
        return bool(cancelled)

    def __del__(self) -> None:
        info = getattr(self, "_info", None)
        if info is not None and info.result is None:
            self.cancel()  # dropped before its end, as ResponseIterator does
