"""gRPC status codes, the error hierarchy, and the wire form of ``grpc-message``.

Pure functions and value types only: no sockets, no threads.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

__all__ = [
    "StatusCode",
    "Details",
    "RpcError",
    "CancelledError",
    "SendStalledError",
    "DeadlineExceededError",
    "UnavailableError",
    "ProtocolError",
    "error_for",
    "encode_grpc_message",
    "decode_grpc_message",
    "status_from_http",
    "status_from_rst",
]


class StatusCode(enum.IntEnum):
    """The 17 gRPC status codes (grpc/doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __call__(self) -> StatusCode:
        """The code itself: ``error.code()`` (grpcio's spelling) works as ``error.code``."""
        return self

    @classmethod
    def from_wire(cls, value: Any) -> StatusCode:
        """Parse a ``grpc-status`` value; anything unparseable is UNKNOWN (spec: never fail)."""
        if type(value) is bytes or type(value) is str:  # hashable: the usual spellings,
            code = _FROM_WIRE.get(value)  # without Enum's __call__
            if code is not None:
                return code
        try:
            return cls(int(value))
        except (TypeError, ValueError):
            return cls.UNKNOWN


_FROM_WIRE: dict[Any, StatusCode] = {
    **{str(code.value).encode(): code for code in StatusCode},
    **{str(code.value): code for code in StatusCode},
}

Metadata = Sequence[tuple[str, Any]]


class Details(str):
    """A status message that is also callable: ``error.details()`` (grpcio's spelling)
    returns the same text as ``error.details``."""

    __slots__ = ()

    def __call__(self) -> str:
        return str(self)


class RpcError(Exception):
    """A call ended with a non-OK status.

    Raised by client calls, and raised by handlers to end a call with a chosen status.
    """

    default_code = StatusCode.UNKNOWN
    # True for classes named after their code (they carry no other); classes named for
    # a cause (ProtocolError) take the code that fits.
    named_for_code = False

    def __init__(
        self,
        code: StatusCode | None = None,
        details: str = "",
        trailing_metadata: Metadata | None = None,
        *,
        initial_metadata: Metadata | None = None,
    ) -> None:
        self.code = code if code is not None else self.default_code
        if self.named_for_code and self.code is not self.default_code:
            # The class names its code: UnavailableError(INTERNAL) would mislead whoever
            # catches it by class to retry. error_for() picks the class for a code.
            raise ValueError(f"{type(self).__name__} carries {type(self).default_code.name}, "
                             f"not {self.code.name}: use error_for(code)")
        self.details = details
        self.trailing_metadata = list(trailing_metadata or ())
        self.initial_metadata = list(initial_metadata or ())
        super().__init__(self.code, self.details)

    def __str__(self) -> str:
        return f"<{type(self).__name__} {self.code.name}: {self.details}>"

    # ``code`` and ``details`` are attributes (API.md) whose values are also callable,
    # so grpcio-style ``e.code()`` and ``e.details()`` work on the same error.
    @property
    def code(self) -> StatusCode:
        return self._code

    @code.setter
    def code(self, value: StatusCode | int) -> None:
        self._code = StatusCode(value)

    @property
    def details(self) -> Details:
        return self._details

    @details.setter
    def details(self, value: str | None) -> None:
        self._details = Details(value or "")

    @property
    def status_details(self) -> bytes | None:
        """The serialized ``google.rpc.Status`` of a rich error (``grpc-status-details-bin``),
        or ``None``; parse it with ``google.rpc.status_pb2.Status.FromString``."""
        for key, value in self.trailing_metadata:
            if key == "grpc-status-details-bin":
                return value if isinstance(value, bytes) else str(value).encode()
        return None


class CancelledError(RpcError):
    """The call was cancelled: by the caller, the peer (RST_STREAM) or a shutdown."""

    default_code = StatusCode.CANCELLED
    named_for_code = True


class SendStalledError(CancelledError):
    """The peer kept its flow-control window (or its socket) shut for the send timeout:
    the stream is given up so it holds no worker."""


class DeadlineExceededError(RpcError):
    """The call's deadline passed before it completed."""

    default_code = StatusCode.DEADLINE_EXCEEDED
    named_for_code = True


class UnavailableError(RpcError):
    """The connection could not be made or was lost; the call may be retried."""

    default_code = StatusCode.UNAVAILABLE
    named_for_code = True


class MessageTooLargeError(RpcError):
    """A message's length prefix is over the configured maximum."""

    default_code = StatusCode.RESOURCE_EXHAUSTED


class ProtocolError(RpcError):
    """The peer broke the Triple/gRPC wire protocol (bad framing, headers, sizes)."""

    default_code = StatusCode.INTERNAL


_ERROR_CLASSES = {
    StatusCode.CANCELLED: CancelledError,
    StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    StatusCode.UNAVAILABLE: UnavailableError,
}


def error_for(code: StatusCode, details: str = "", trailing_metadata: Metadata | None = None,
              initial_metadata: Metadata | None = None) -> RpcError:
    """The most specific ``RpcError`` subclass for ``code``."""
    cls = _ERROR_CLASSES.get(code, RpcError)
    return cls(code, details, trailing_metadata, initial_metadata=initial_metadata)


# grpc PROTOCOL-HTTP2.md "Responses": bytes 0x20-0x7E pass except '%', everything else
# is %XX. grpc-js decodes with decodeURI, so escaping more than that (e.g. '+') would
# leave visible %2B there; grpcio escapes exactly this set and so do we.
_MESSAGE_SAFE = frozenset(range(0x20, 0x7F)) - {ord("%")}
_ESCAPE = [chr(b) if b in _MESSAGE_SAFE else f"%{b:02X}" for b in range(256)]


def encode_grpc_message(message: str) -> str:
    """Percent-encode ``message`` as UTF-8 for the ``grpc-message`` trailer.

    Never fails: a lone surrogate (from ``surrogateescape``-decoded text, say), which
    UTF-8 cannot carry, goes out as ``?``.
    """
    if message.isascii() and "%" not in message and message.isprintable():
        return message
    return "".join([_ESCAPE[b] for b in message.encode("utf-8", "replace")])


def decode_grpc_message(raw: bytes | str) -> str:
    """Decode a ``grpc-message`` value; never fails (spec: decoders must be lenient).

    Java 3.3 and apache-dubbo send raw UTF-8, grpc-js's server uses encodeURI: all of
    these decode correctly because percent-decoding leaves raw bytes alone.
    """
    if isinstance(raw, str):
        text = raw
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no decoding produced: U+FFFD below
            raw = text.encode("utf-8", "surrogatepass")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return raw.decode("utf-8", "replace")


# grpc doc/http-grpc-status-mapping.md, used only when grpc-status is absent.
_HTTP_TO_STATUS = {
    400: StatusCode.INTERNAL,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.UNIMPLEMENTED,
    429: StatusCode.UNAVAILABLE,
    431: StatusCode.INTERNAL,
    502: StatusCode.UNAVAILABLE,
    503: StatusCode.UNAVAILABLE,
    504: StatusCode.UNAVAILABLE,
}


def status_from_http(http_status: int) -> StatusCode:
    """The gRPC code for an HTTP status of a response that carries no ``grpc-status``."""
    return _HTTP_TO_STATUS.get(http_status, StatusCode.UNKNOWN)


# grpc PROTOCOL-HTTP2.md "Errors": RST_STREAM error code -> status.
_RST_TO_STATUS = {
    0x7: StatusCode.UNAVAILABLE,  # REFUSED_STREAM: retryable
    0x8: StatusCode.CANCELLED,  # CANCEL
    0xB: StatusCode.RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
    0xC: StatusCode.PERMISSION_DENIED,  # INADEQUATE_SECURITY
}


def status_from_rst(error_code: int) -> StatusCode:
    """The gRPC code for a stream reset by the peer before any status arrived."""
    return _RST_TO_STATUS.get(int(error_code), StatusCode.INTERNAL)
