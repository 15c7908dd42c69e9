"""The grpcio-shaped side of ``dubbo.Channel``: multi-callables, calls, futures and
errors that are grpcio's own abstract types (``grpc.RpcError``, ``grpc.Call``,
``grpc.Future``). Imported only when a Channel is made: it imports grpc."""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..client.client import Call, ResponseIterator
from ..status import DeadlineExceededError, RpcError, StatusCode
from ..wire.metadata import MetadataLike

if TYPE_CHECKING:  # pragma: no cover
    from .channel import Channel

__all__ = ["ChannelRpcError", "UnaryUnaryMultiCallable", "UnaryStreamMultiCallable",
           "StreamUnaryMultiCallable", "StreamStreamMultiCallable", "grpc_code"]

log = logging.getLogger("dubbo.client")

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
ChannelConnectivity = grpc.ChannelConnectivity
Metadata = tuple[tuple[str, str | bytes], ...]


def grpc_code(code: StatusCode | None) -> Any:
    """grpcio's ``grpc.StatusCode`` for ours (``None`` stays ``None``)."""
    return None if code is None else _GRPC_CODES[int(code)]


def _tuple(metadata: Any) -> Metadata | None:
    return None if metadata is None else tuple((k, v) for k, v in metadata)


def _run_callbacks(callbacks: list[Callable[[], Any]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a callback of a dubbo.Channel call raised")


class ChannelRpcError(grpc.RpcError, grpc.Call, grpc.Future):  # type: ignore[misc]
    """A failed call, as grpcio raises it: ``grpc.RpcError`` and a finished
    ``grpc.Call`` (``code()`` is a ``grpc.StatusCode``). ``error`` is dubbo's own
    ``RpcError`` for the same failure."""

    def __init__(self, error: RpcError) -> None:
        super().__init__(error.code, str(error.details))
        self.error = error
        self._code = grpc_code(error.code)
        self._details = str(error.details)

    def __str__(self) -> str:
        return (f"<{type(self).__name__} of RPC that terminated with:\n"
                f"\tstatus = {self._code}\n\tdetails = \"{self._details}\"\n>")

    __repr__ = __str__

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Metadata:
        return _tuple(self.error.initial_metadata) or ()

    def trailing_metadata(self) -> Metadata:
        return _tuple(self.error.trailing_metadata) or ()

    def debug_error_string(self) -> str:
        return f"{self._code}: {self._details}"

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        return False  # the call is over: grpcio does not register it either

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> ChannelRpcError:
        return self

    def traceback(self, timeout: float | None = None) -> Any:
        return self.__traceback__

    def add_done_callback(self, fn: Callable[[Any], Any]) -> None:
        fn(self)


def to_grpc(error: RpcError) -> ChannelRpcError:
    return error if isinstance(error, ChannelRpcError) else ChannelRpcError(error)


class _CallView(grpc.Call):  # type: ignore[misc]
    """A dubbo ``Call`` (what ``with_call`` returns) seen as a ``grpc.Call``."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def initial_metadata(self) -> Metadata:
        return _tuple(self._call.initial_metadata()) or ()

    def trailing_metadata(self) -> Metadata | None:
        return _tuple(self._call.trailing_metadata())

    def code(self) -> Any:
        return grpc_code(self._call.code())

    def details(self) -> str | None:
        details = self._call.details()
        return None if details is None else str(details)

    def is_active(self) -> bool:
        return self._call.is_active()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def cancel(self) -> bool:
        return self._call.cancel()

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        return False  # with_call returns once the call is over


class _MultiCallable:
    """One method of a channel, by its ``/pkg.Service/Method`` path."""

    request_streaming = False
    response_streaming = False

    def __init__(self, channel: Channel, method: str,
                 request_serializer: Callable[[Any], bytes] | None,
                 response_deserializer: Callable[[bytes], Any] | None) -> None:
        if not method.startswith("/"):
            method = "/" + method
        self._channel = channel
        self._path = method
        client = channel.client
        factory = {(False, False): client.unary, (True, False): client.client_stream,
                   (False, True): client.server_stream, (True, True): client.bidi_stream}
        self._method: Any = factory[self.request_streaming, self.response_streaming](
            method, request_serializer, response_deserializer)
        # A future needs the call before its reply: it runs as a response stream.
        self._streaming: Any = (client.bidi_stream if self.request_streaming
                                else client.server_stream)(method, request_serializer,
                                                           response_deserializer)

    def _prepare(self, timeout: float | None, credentials: Any,
                 wait_for_ready: bool | None) -> float | None:
        """Check what grpcio checks before a call; with ``wait_for_ready``, wait for the
        connection. The call's timeout from now on."""
        if self._channel.closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        if credentials is not None:
            raise NotImplementedError("per-call credentials are not supported by "
                                      "dubbo.Channel; send a token as metadata")
        if not wait_for_ready:
            return timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._channel.wait_ready(deadline):
            if self._channel.closed:
                raise ValueError("Cannot invoke RPC on closed channel!")
            raise DeadlineExceededError(StatusCode.DEADLINE_EXCEEDED,
                                        "Deadline Exceeded waiting for the channel")
        return None if deadline is None else max(0.0, deadline - time.monotonic())


class _UnaryResponse(_MultiCallable):
    def __call__(self, request: Any, timeout: float | None = None,
                 metadata: MetadataLike | None = None, credentials: Any = None,
                 wait_for_ready: bool | None = None, compression: Any = None) -> Any:
        try:
            timeout = self._prepare(timeout, credentials, wait_for_ready)
            return self._method(request, timeout=timeout, metadata=metadata,
                                compression=compression)
        except RpcError as exc:
            raise to_grpc(exc) from None

    def with_call(self, request: Any, timeout: float | None = None,
                  metadata: MetadataLike | None = None, credentials: Any = None,
                  wait_for_ready: bool | None = None,
                  compression: Any = None) -> tuple[Any, _CallView]:
        try:
            timeout = self._prepare(timeout, credentials, wait_for_ready)
            response, call = self._method(request, timeout=timeout, metadata=metadata,
                                          with_call=True, compression=compression)
        except RpcError as exc:
            raise to_grpc(exc) from None
        return response, _CallView(call)

    def future(self, request: Any, timeout: float | None = None,
               metadata: MetadataLike | None = None, credentials: Any = None,
               wait_for_ready: bool | None = None, compression: Any = None) -> _Future:
        if self._channel.closed:
            raise ValueError("Cannot invoke RPC on closed channel!")
        return _Future(self, request, timeout, metadata, credentials, wait_for_ready,
                       compression)


class _StreamResponse(_MultiCallable):
    def __call__(self, request: Any, timeout: float | None = None,
                 metadata: MetadataLike | None = None, credentials: Any = None,
                 wait_for_ready: bool | None = None, compression: Any = None) -> _StreamCall:
        try:
            timeout = self._prepare(timeout, credentials, wait_for_ready)
            replies = self._method(request, timeout=timeout, metadata=metadata,
                                   compression=compression)
        except RpcError as exc:  # as in grpcio: a failed start shows when iterated
            return _StreamCall(None, to_grpc(exc))
        return _StreamCall(replies)


class UnaryUnaryMultiCallable(_UnaryResponse, grpc.UnaryUnaryMultiCallable):  # type: ignore[misc]
    pass


class StreamUnaryMultiCallable(_UnaryResponse, grpc.StreamUnaryMultiCallable):  # type: ignore[misc]
    request_streaming = True


class UnaryStreamMultiCallable(_StreamResponse, grpc.UnaryStreamMultiCallable):  # type: ignore[misc]
    response_streaming = True


class StreamStreamMultiCallable(_StreamResponse, grpc.StreamStreamMultiCallable):  # type: ignore[misc]
    request_streaming = True
    response_streaming = True


class _StreamCall(grpc.Call):  # type: ignore[misc]
    """The replies of a response-streaming call: an iterator and a ``grpc.Call``.
    ``add_callback`` functions run once the replies end, fail or are cancelled.
    ``_lock`` guards ``_callbacks`` and ``_over``."""

    def __init__(self, replies: ResponseIterator | None,
                 error: ChannelRpcError | None = None) -> None:
        self._replies = replies
        self._error = error
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], Any]] = []
        self._over = replies is None

    def __iter__(self) -> _StreamCall:
        return self

    def __next__(self) -> Any:
        replies = self._replies
        if replies is None:
            assert self._error is not None
            raise self._error
        try:
            return next(replies)
        except StopIteration:
            self._ended()
            raise
        except RpcError as exc:
            self._error = to_grpc(exc)
            self._ended()
            raise self._error from None

    next = __next__  # grpcio's rendezvous has it too

    def _ended(self) -> None:
        with self._lock:
            if self._over:
                return
            self._over = True
            callbacks, self._callbacks = self._callbacks, []
        _run_callbacks(callbacks)

    def initial_metadata(self) -> Metadata:
        if self._replies is None:
            return self._error.initial_metadata() if self._error is not None else ()
        return _tuple(self._replies.initial_metadata()) or ()

    def trailing_metadata(self) -> Metadata | None:
        if self._replies is None:
            return self._error.trailing_metadata() if self._error is not None else None
        return _tuple(self._replies.trailing_metadata())

    def code(self) -> Any:
        if self._replies is None:
            return self._error.code() if self._error is not None else None
        return grpc_code(self._replies.code())

    def details(self) -> str | None:
        if self._replies is None:
            return self._error.details() if self._error is not None else None
        details = self._replies.details()
        return None if details is None else str(details)

    def is_active(self) -> bool:
        return self._replies is not None and self._replies.is_active()

    def time_remaining(self) -> float | None:
        return None if self._replies is None else self._replies.time_remaining()

    def cancel(self) -> bool:
        """Cancel the call (RST_STREAM CANCEL); a later ``next()`` raises CANCELLED."""
        if self._replies is None or not self._replies.cancel():
            return False
        self._ended()
        return True

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self._lock:
            if not self._over:
                self._callbacks.append(callback)
                return True
        return False

    def done(self) -> bool:
        return not self.is_active()

    def cancelled(self) -> bool:
        return self.code() is grpc.StatusCode.CANCELLED

    def running(self) -> bool:
        return self.is_active()


class _State(enum.Enum):
    RUNNING = 0
    DONE = 1
    CANCELLED = 2


class _Future(grpc.Future, grpc.Call):  # type: ignore[misc]
    """A unary-response call running in a thread of its own: ``grpc.Future`` and
    ``grpc.Call``. ``_done`` guards the state, result, error, call and callbacks."""

    def __init__(self, method: _UnaryResponse, request: Any, timeout: float | None,
                 metadata: MetadataLike | None, credentials: Any, wait_for_ready: bool | None,
                 compression: Any) -> None:
        if credentials is not None:
            method._prepare(None, credentials, False)  # raises as a direct call would
        self._done = threading.Condition()
        self._state = _State.RUNNING
        self._response: Any = None
        self._error: ChannelRpcError | None = None
        self._replies: ResponseIterator | None = None
        self._callbacks: list[Callable[[Any], Any]] = []
        self._deadline = None if timeout is None else time.monotonic() + timeout
        threading.Thread(target=self._run, name="dubbo-channel-future", daemon=True,
                         args=(method, request, timeout, metadata, wait_for_ready,
                               compression)).start()

    def _run(self, method: _UnaryResponse, request: Any, timeout: float | None,
             metadata: MetadataLike | None, wait_for_ready: bool | None,
             compression: Any) -> None:
        try:
            timeout = method._prepare(timeout, None, wait_for_ready)
            replies = method._streaming(request, timeout=timeout, metadata=metadata,
                                        compression=compression)
            with self._done:
                self._replies = replies
                cancelled = self._state is _State.CANCELLED
            if cancelled:
                replies.cancel()
                return
            response = next(replies, _NONE)
            if response is _NONE:
                raise RpcError(StatusCode.UNIMPLEMENTED, "unary call got no response message")
            if next(replies, _NONE) is not _NONE:
                replies.cancel()
                raise RpcError(StatusCode.UNIMPLEMENTED,
                               "unary call got more than one response message")
        except RpcError as exc:
            self._finish(None, to_grpc(exc))
        except Exception as exc:  # a serializer, ...: the caller hears of it as grpcio says
            self._finish(None, to_grpc(RpcError(StatusCode.UNKNOWN, f"{exc!r}")))
        except BaseException:  # pragma: no cover - interpreter exit
            self._finish(None, to_grpc(RpcError(StatusCode.CANCELLED, "interrupted")))
            raise
        else:
            self._finish(response, None)

    def _finish(self, response: Any, error: ChannelRpcError | None) -> None:
        with self._done:
            if self._state is not _State.RUNNING:
                return
            self._state = _State.DONE
            self._response, self._error = response, error
            callbacks, self._callbacks = self._callbacks, []
            self._done.notify_all()
        _run_callbacks([functools.partial(fn, self) for fn in callbacks])

    def _wait(self, timeout: float | None) -> None:
        with self._done:
            if not self._done.wait_for(lambda: self._state is not _State.RUNNING, timeout):
                raise grpc.FutureTimeoutError()
            if self._state is _State.CANCELLED:
                raise grpc.FutureCancelledError()

    # -- grpc.Future -----------------------------------------------------------------

    def cancel(self) -> bool:
        with self._done:
            if self._state is not _State.RUNNING:
                return False
            self._state = _State.CANCELLED
            self._error = to_grpc(RpcError(StatusCode.CANCELLED, "Locally cancelled by "
                                                                 "application!"))
            replies = self._replies
            callbacks, self._callbacks = self._callbacks, []
            self._done.notify_all()
        if replies is not None:
            replies.cancel()
        _run_callbacks([functools.partial(fn, self) for fn in callbacks])
        return True

    def cancelled(self) -> bool:
        return self._state is _State.CANCELLED

    def running(self) -> bool:
        return self._state is _State.RUNNING

    def done(self) -> bool:
        return self._state is not _State.RUNNING

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._response

    def exception(self, timeout: float | None = None) -> ChannelRpcError | None:
        self._wait(timeout)
        return self._error

    def traceback(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        return None if self._error is None else self._error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], Any]) -> None:
        with self._done:
            if self._state is _State.RUNNING:
                self._callbacks.append(fn)
                return
        fn(self)

    # -- grpc.Call -------------------------------------------------------------------

    def code(self) -> Any:
        if self._error is not None:
            return self._error.code()
        return grpc.StatusCode.OK if self._state is _State.DONE else None

    def details(self) -> str | None:
        if self._error is not None:
            return self._error.details()
        replies = self._replies
        if self._state is not _State.DONE or replies is None:
            return None
        details = replies.details()
        return None if details is None else str(details)

    def initial_metadata(self) -> Metadata:
        with self._done:  # grpcio waits for them too: until the call has a stream
            self._done.wait_for(lambda: self._replies is not None
                                or self._state is not _State.RUNNING)
            replies = self._replies
        if replies is None:
            return self._error.initial_metadata() if self._error is not None else ()
        return _tuple(replies.initial_metadata()) or ()

    def trailing_metadata(self) -> Metadata | None:
        if self._state is _State.RUNNING:
            return None
        if self._error is not None and self._error.error.trailing_metadata:
            return self._error.trailing_metadata()
        replies = self._replies
        return None if replies is None else _tuple(replies.trailing_metadata())

    def is_active(self) -> bool:
        return self._state is _State.RUNNING

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        with self._done:
            if self._state is not _State.RUNNING:
                return False
            self._callbacks.append(lambda _future: callback())
            return True


_NONE = object()
