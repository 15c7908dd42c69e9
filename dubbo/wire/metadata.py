"""Triple/gRPC header blocks: building them, and validating what peers send.

Sans-I/O: header lists in, header lists out. Received headers are ``(bytes, bytes)``
pairs (h2 with ``header_encoding=None``) so that peers sending raw non-UTF-8 values
(Java 3.3's ``grpc-message``) cannot break decoding.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..status import (
    RpcError,
    StatusCode,
    decode_grpc_message,
    encode_grpc_message,
    status_from_http,
)
from .deadline import encode_timeout, parse_timeout

__all__ = [
    "USER_AGENT",
    "MetadataLike",
    "encode_metadata",
    "metadata_pairs",
    "decode_metadata",
    "RequestHead",
    "RequestRejected",
    "request_headers",
    "parse_request_headers",
    "response_headers",
    "trailers",
    "ResponseStatus",
    "status_from_headers",
    "check_response_headers",
]

USER_AGENT = f"dubbo-python-triple/{__version__}"
# Pairs as grpcio takes them, or a dict ({key: value}).
MetadataLike = Iterable[tuple[str, Any]] | Mapping[str, Any]

_KEY_RE = re.compile(r"[0-9a-z_.\-]+")
# Headers that carry protocol state, never user metadata (grpc PROTOCOL-HTTP2.md).
_RESERVED = frozenset(
    b"content-type te grpc-timeout grpc-encoding grpc-accept-encoding grpc-status "
    b"grpc-message grpc-message-type".split()
)
_GRPC_CONTENT_TYPE = b"application/grpc"
_AFTER_GRPC = (b"", b"+", b";")  # what may follow it in a gRPC content-type


def _is_grpc_content_type(value: bytes) -> bool:
    """``application/grpc`` alone or followed by ``+subtype`` or ``;params``
    (not ``application/grpc-web``, a different protocol)."""
    return value.startswith(_GRPC_CONTENT_TYPE) and value[16:17] in _AFTER_GRPC


def metadata_pairs(metadata: MetadataLike | None) -> list[tuple[str, Any]]:
    """Metadata given as pairs, a dict or None, as a new list of pairs."""
    if not metadata:
        return []
    if isinstance(metadata, Mapping):
        return list(metadata.items())
    return list(metadata)


def encode_metadata(metadata: MetadataLike | None) -> list[tuple[str, str]]:
    """Validate user metadata and put it in wire form (``-bin`` values base64, unpadded).

    Raises ``ValueError`` naming the bad key or value: a clear error before anything is
    sent beats a peer resetting the stream.
    """
    out: list[tuple[str, str]] = []
    if not metadata:
        return out
    if isinstance(metadata, str | bytes):
        raise ValueError(f"metadata must be (key, value) pairs or a dict, not {metadata!r}")
    for item in metadata_pairs(metadata):
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"metadata must be (key, value) pairs or a dict; got item {item!r}")
        key, value = item
        if not key.isascii():
            raise ValueError(f"invalid metadata key {key!r}: use [0-9a-z_.-]")
        key = key.lower()
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"invalid metadata key {key!r}: use [0-9a-z_.-]")
        if (key.startswith("grpc-") and key != "grpc-status-details-bin") or \
                key in ("content-type", "te"):
            raise ValueError(f"metadata key {key!r} is reserved for the protocol")
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("utf-8")
            elif not isinstance(value, bytes | bytearray | memoryview):
                # bytes(5) would be five zero bytes (and bytes(10**12) a MemoryError).
                raise ValueError(f"metadata value for {key!r} must be bytes or str, "
                                 f"not {type(value).__name__}")
            value = base64.b64encode(bytes(value)).rstrip(b"=").decode("ascii")
        else:
            if isinstance(value, bytes):
                value = value.decode("ascii")
            value = str(value)
            if not all(0x20 <= ord(c) <= 0x7E for c in value):
                raise ValueError(
                    f"metadata value for {key!r} must be printable ASCII; "
                    "use a key ending in '-bin' for binary values"
                )
        out.append((key, value))
    return out


def _b64decode(value: bytes) -> bytes:
    # Peers may pad or not, and may join repeated values with ',' (grpc spec).
    parts = value.split(b",")
    try:
        return b"".join(
            base64.b64decode(p.strip() + b"=" * (-len(p.strip()) % 4)) for p in parts
        )
    except (binascii.Error, ValueError):
        return value


def decode_metadata(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str | bytes]]:
    """User metadata from a received header block: ``-bin`` values as bytes, others str."""
    out: list[tuple[str, str | bytes]] = []
    for key, value in headers:
        if key[:1] == b":" or key in _RESERVED:
            continue
        name = key.decode("ascii", "replace")
        if key.endswith(b"-bin"):
            out.append((name, _b64decode(value)))
        else:
            out.append((name, value.decode("utf-8", "replace")))
    return out


def request_headers(
    path: str,
    authority: str,
    *,
    scheme: str = "http",
    timeout: float | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    content_type: str = "application/grpc+proto",
    accept_encoding: str | None = None,
    encoding: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The request HEADERS block; ``metadata`` must already be ``encode_metadata``-ed.

    Order per the spec: pseudo-headers, ``grpc-timeout``, call definition, metadata.
    """
    headers = [
        (":method", "POST"),
        (":scheme", scheme),
        (":path", path),
        (":authority", authority),
    ]
    if timeout is not None:
        headers.append(("grpc-timeout", encode_timeout(timeout)))
    headers.append(("content-type", content_type))
    headers.append(("te", "trailers"))
    headers.append(("user-agent", USER_AGENT))
    if encoding:
        headers.append(("grpc-encoding", encoding))
    if accept_encoding:
        headers.append(("grpc-accept-encoding", accept_encoding))
    headers.extend(extra)
    headers.extend(metadata)
    return headers


class RequestRejected(RpcError):
    """A request head the server refuses; carries the HTTP status to answer with."""

    def __init__(self, http_status: int, code: StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.http_status = http_status


class RequestHead:
    """What the server needs from a request's HEADERS block (read-only once made).

    ``metadata`` (the user metadata, decoded) is worked out from the raw block on
    first use: most calls never ask for it, and decoding it cost every call."""

    __slots__ = ("service", "method", "content_type", "timeout", "encoding",
                 "accept_encoding", "headers", "path", "_metadata", "_raw")

    def __init__(self, service: str, method: str, content_type: str,
                 timeout: float | None, encoding: str | None, accept_encoding: str | None,
                 metadata: list[tuple[str, str | bytes]] | None = None,
                 headers: dict[bytes, bytes] | None = None, *,
                 raw: Sequence[tuple[bytes, bytes]] = (), path: str | None = None) -> None:
        self.service = service
        self.method = method
        self.content_type = content_type
        self.timeout = timeout
        self.encoding = encoding
        self.accept_encoding = accept_encoding
        self.headers: dict[bytes, bytes] = {} if headers is None else headers
        # ``path`` is "/service/method" (parse_request_headers has it already).
        self.path: str = f"/{service}/{method}" if path is None else path
        # Either given, or decoded from ``raw`` (the received block) on first use.
        self._metadata = metadata if metadata is not None or raw else []
        self._raw = raw

    @property
    def metadata(self) -> list[tuple[str, str | bytes]]:
        """The request's user metadata: str values, bytes for ``-bin`` keys."""
        metadata = self._metadata
        if metadata is None:
            # Two threads racing here decode the same block to equal lists.
            metadata = self._metadata = decode_metadata(self._raw)
        return metadata

    def __repr__(self) -> str:
        return (f"RequestHead({self.path!r}, content_type={self.content_type!r}, "
                f"timeout={self.timeout!r}, encoding={self.encoding!r})")

    @property
    def drops_empty_messages(self) -> bool:
        """apache-dubbo 3.0.0b1 clients end every request stream with an empty message."""
        return self.content_type == "application/grpc+data"


def parse_request_headers(headers: Sequence[tuple[bytes, bytes]]) -> RequestHead:
    """Validate a request head; ``RequestRejected`` says how to refuse it."""
    h = dict(headers)
    get = h.get
    if get(b":method") != b"POST":
        raise RequestRejected(405, StatusCode.INTERNAL,
                              f"method {get(b':method', b'').decode('latin-1')!r} not allowed")
    content_type = get(b"content-type", b"")
    if not (content_type.startswith(_GRPC_CONTENT_TYPE)
            and content_type[16:17] in _AFTER_GRPC):  # _is_grpc_content_type, inlined
        shown = content_type.decode("latin-1")
        raise RequestRejected(415, StatusCode.INTERNAL,
                              f"invalid gRPC request content-type {shown!r}")
    path = get(b":path", b"").decode("utf-8", "replace")
    service, sep, method = path[1:].rpartition("/")
    if not path.startswith("/") or not sep or not service or not method:
        raise RequestRejected(200, StatusCode.UNIMPLEMENTED, f"malformed method path {path!r}")
    timeout = None
    raw_timeout = get(b"grpc-timeout")
    if raw_timeout is not None:
        try:
            timeout = parse_timeout(raw_timeout)
        except ValueError as exc:
            raise RequestRejected(200, StatusCode.INTERNAL, str(exc)) from None
    encoding = get(b"grpc-encoding")
    accept = get(b"grpc-accept-encoding")
    return RequestHead(service, method, content_type.decode("latin-1"), timeout,
                       encoding.decode("latin-1") if encoding else None,
                       accept.decode("latin-1") if accept else None,
                       None, h, raw=headers, path=path)


def response_headers(
    content_type: str = "application/grpc",
    metadata: Sequence[tuple[str, str]] = (),
    accept_encoding: str | None = None,
    encoding: str | None = None,
) -> list[tuple[str, str]]:
    """The response HEADERS block sent before the first reply message."""
    headers = [(":status", "200"), ("content-type", content_type)]
    if encoding:
        headers.append(("grpc-encoding", encoding))
    if accept_encoding:
        headers.append(("grpc-accept-encoding", accept_encoding))
    headers.extend(metadata)
    return headers


def trailers(
    code: StatusCode,
    details: str = "",
    metadata: Sequence[tuple[str, str]] = (),
    *,
    trailers_only: bool = False,
    content_type: str = "application/grpc",
    http_status: int = 200,
) -> list[tuple[str, str]]:
    """The closing HEADERS block; with ``trailers_only`` it is the whole response.

    A trailers-only response keeps ``content-type``: grpc-go and apache-dubbo ignore
    ``grpc-status`` without it.
    """
    headers: list[tuple[str, str]] = []
    if trailers_only:
        headers.append((":status", str(http_status)))
        headers.append(("content-type", content_type))
    headers.append(("grpc-status", str(int(code))))
    if details:
        headers.append(("grpc-message", encode_grpc_message(details)))
    headers.extend(metadata)
    return headers


@dataclass(frozen=True, slots=True)
class ResponseStatus:
    code: StatusCode
    details: str
    metadata: list[tuple[str, str | bytes]]


def check_response_headers(headers: Sequence[tuple[bytes, bytes]]) -> ResponseStatus | None:
    """Vet a response's first HEADERS block.

    Returns the final status when the block ends the call by itself (trailers-only or
    a non-gRPC response), else ``None``. When ``grpc-status`` is present it wins over
    ``:status`` (Java 3.3 sends 404/500 with a valid grpc-status).
    """
    h = dict(headers)
    if b"grpc-status" in h:
        return status_from_headers(headers)
    raw_status = h.get(b":status", b"")
    # Three digits (RFC 9110 §15). A peer may send thousands, and int() refuses more
    # than 4,300 of them with ValueError: that killed the client's reader (issue 7).
    if len(raw_status) != 3 or not raw_status.isdigit():
        shown = raw_status[:20].decode("latin-1") + ("..." if len(raw_status) > 20 else "")
        return ResponseStatus(StatusCode.UNKNOWN,
                              f"malformed HTTP :status {shown!r} without grpc-status",
                              decode_metadata(headers))
    http_status = int(raw_status)
    if http_status != 200:
        return ResponseStatus(status_from_http(http_status),
                              f"HTTP status {http_status} without grpc-status",
                              decode_metadata(headers))
    content_type = h.get(b"content-type", b"")
    if not _is_grpc_content_type(content_type):
        shown = content_type.decode("latin-1")
        return ResponseStatus(StatusCode.UNKNOWN, f"invalid response content-type {shown!r}",
                              decode_metadata(headers))
    return None


def status_from_headers(headers: Sequence[tuple[bytes, bytes]]) -> ResponseStatus:
    """The status a trailers block carries; a missing ``grpc-status`` is UNKNOWN."""
    code: StatusCode | None = None
    details = ""
    for key, value in headers:
        if key == b"grpc-status":
            code = StatusCode.from_wire(value)
        elif key == b"grpc-message":
            details = decode_grpc_message(value)
    if code is None:
        code, details = StatusCode.UNKNOWN, details or "missing grpc-status in response trailers"
    return ResponseStatus(code, details, decode_metadata(headers))
