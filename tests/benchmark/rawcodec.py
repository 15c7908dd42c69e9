"""A grpclib codec passing raw bytes through (grpclib requires a codec).

Imported only by grpclib's server and client, so the other systems' processes never
load grpclib.
"""

from __future__ import annotations

from typing import Any

from grpclib.encoding.base import CodecBase


class RawCodec(CodecBase):
    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data
