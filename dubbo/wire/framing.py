"""The gRPC Length-Prefixed-Message codec (PROTOCOL-HTTP2.md "Data Frames").

DATA-frame boundaries say nothing about message boundaries, so the decoder is
incremental: one message may span many ``feed`` calls and one call may hold many
messages. Work is O(total bytes): the buffer is compacted only when its consumed head
outgrows the live tail, never re-sliced per message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ..status import MessageTooLargeError, ProtocolError, StatusCode
from .compression import Codec, compress_message

__all__ = ["HEADER_SIZE", "DEFAULT_MAX_MESSAGE_SIZE", "encode_message", "message_parts",
           "MessageDecoder", "MessageTooLargeError"]

HEADER_SIZE = 5
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # grpcio's default, inclusive
_HEADER = struct.Struct(">BI")
# Bodies at least this big are received as chunks joined once, and sent apart from
# their prefix.
_LARGE_BODY = 64 * 1024


def encode_message(payload: bytes, compressed: bool = False) -> bytes:
    """Frame one serialized message."""
    return _HEADER.pack(1 if compressed else 0, len(payload)) + payload


def message_parts(payload: bytes, compressed: bool = False) -> bytes | tuple[bytes, bytes]:
    """Frame one message for sending: small ones as one buffer, a large one as its
    prefix and body, so it is not copied just to put five bytes in front."""
    if len(payload) < _LARGE_BODY:
        return encode_message(payload, compressed)
    return _HEADER.pack(1 if compressed else 0, len(payload)), payload


def check_size(size: int, limit: int | None, direction: str) -> None:
    """Raise RESOURCE_EXHAUSTED when ``size`` is over ``limit`` (``None``: unlimited)."""
    if limit is not None and size > limit:
        raise MessageTooLargeError(
            StatusCode.RESOURCE_EXHAUSTED,
            f"{direction} message larger than max ({size} vs. {limit})",
        )


class MessageDecoder:
    """Turns a byte stream into message payloads.

    ``decompress`` undoes the stream's ``grpc-encoding`` for messages whose
    Compressed-Flag is 1; without it such a message is a protocol error (compression.md
    test case 6). The size limit is checked on the length prefix, before the body is
    buffered, so an oversize message never reaches memory.

    Small messages are parsed out of one buffer. A large body split over many DATA
    frames is kept as the list of its pieces and joined once when complete: one copy,
    where growing a buffer and slicing the message out of it would cost three.
    """

    __slots__ = ("_buf", "_pos", "_chunks", "_need", "_flag", "max_message_size",
                 "decompress")

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        decompress: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._chunks: list[bytes | memoryview] = []
        self._need = 0  # body bytes still missing from _chunks
        self._flag = 0
        self.max_message_size = max_message_size
        self.decompress = decompress

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        gathered = HEADER_SIZE + sum(len(c) for c in self._chunks) if self._need else 0
        return len(self._buf) - self._pos + gathered

    def at_boundary(self) -> bool:
        """True when no partial message is pending (a stream may end here)."""
        return len(self._buf) == self._pos and not self._need

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Add ``data``; return every message it completes, in order.

        ``data`` must not change afterwards (pieces of it may be kept until the
        message they belong to is complete).
        """
        if not self._need and self._pos == len(self._buf) and len(data) > HEADER_SIZE:
            # One whole uncompressed message, nothing pending (a ping-pong's DATA frame).
            flag, length = _HEADER.unpack_from(data)
            if not flag and len(data) - HEADER_SIZE == length and (
                    self.max_message_size is None or length <= self.max_message_size):
                return [bytes(data[HEADER_SIZE:])]
        messages: list[bytes] = []
        if self._need:
            if len(data) < self._need:
                self._chunks.append(data)
                self._need -= len(data)
                return messages
            view = memoryview(data)
            self._chunks.append(view[: self._need])
            data = view[self._need :]
            payload = b"".join(self._chunks)
            self._chunks = []
            self._need = 0
            messages.append(self._finish(self._flag, payload))
            if not data:
                return messages
        buf = self._buf
        if self._pos == len(buf):
            # Common case: nothing pending. Parse straight out of ``data``.
            buf.clear()
            self._pos = 0
            used = self._parse(data, 0, messages, owned=True)
            if used < len(data):
                buf += data[used:]
            return messages
        buf += data
        self._pos = self._parse(buf, self._pos, messages, owned=False)
        if self._pos == len(buf) or self._pos >= len(buf) - self._pos:
            del buf[: self._pos]
            self._pos = 0
        return messages

    def _parse(self, data: bytes | bytearray | memoryview, pos: int, messages: list[bytes],
               owned: bool) -> int:
        """Append the complete messages in ``data[pos:]``; return where parsing stopped.

        ``owned``: ``data`` is immutable, so a large body's first piece may be kept as a
        view instead of copied.
        """
        end = len(data)
        unpack = _HEADER.unpack_from
        limit = self.max_message_size
        while end - pos >= HEADER_SIZE:
            flag, length = unpack(data, pos)
            if flag & 0xFE:
                raise ProtocolError(StatusCode.INTERNAL, f"invalid message flags 0x{flag:02x}")
            if limit is not None and length > limit:
                check_size(length, limit, "Received")
            start = pos + HEADER_SIZE
            available = end - start
            if available < length:
                if length < _LARGE_BODY:
                    break  # small: wait in the buffer for the rest
                piece = memoryview(data)[start:end]
                self._chunks = [piece if owned else piece.tobytes()]
                self._need = length - available
                self._flag = flag
                return end
            payload = bytes(memoryview(data)[start : start + length])
            pos = start + length
            messages.append(self._finish(flag, payload) if flag else payload)
        return pos

    def _finish(self, flag: int, payload: bytes) -> bytes:
        if not flag:
            return payload
        if self.decompress is None:
            raise ProtocolError(
                StatusCode.INTERNAL,
                "compressed message received but the stream has no grpc-encoding",
            )
        payload = self.decompress(payload)
        check_size(len(payload), self.max_message_size, "Received decompressed")
        return payload


def frame_message(data: bytes | bytearray | memoryview, codec: Codec | None,
                  limit: int | None) -> bytes | tuple[bytes, bytes]:
    """Check a serialized message against the send ``limit``, compress it when that
    helps, and frame it for sending (``message_parts``)."""
    check_size(len(data), limit, "Sent")
    if codec is None:
        return message_parts(bytes(data))
    compressed, payload = compress_message(codec, bytes(data))
    return message_parts(payload, compressed)
