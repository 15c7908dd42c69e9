"""HPACK encoder and decoder that remember header blocks seen before.

gRPC repeats the same header blocks call after call: request headers, response headers,
``grpc-status: 0`` trailers. Once their fields sit in the HPACK dynamic table, each
block encodes to (and decodes from) the same bytes, yet hpack redoes the work in Python
every time. A result is reused only while the dynamic table is exactly as it was when
it was computed: the table counts its changes (``version``), and only a block whose
coding left the table unchanged is remembered, so the bytes on the wire are the ones
hpack itself would produce (RFC 7541 §2.3: coding depends on nothing else).
"""

from __future__ import annotations

from typing import Any

from hpack import Decoder, Encoder
from hpack.table import HeaderTable

__all__ = ["CachingDecoder", "CachingEncoder"]

_MAX_ENTRIES = 256  # distinct blocks remembered per connection and direction


class _VersionedTable(HeaderTable):
    """A dynamic table that counts every change to its contents or size."""

    def __init__(self) -> None:
        super().__init__()
        self.version = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.version += 1
        super().add(name, value)

    def _set_maxsize(self, newmax: int) -> None:
        self.version += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]

    maxsize = property(HeaderTable.maxsize.fget, _set_maxsize)  # type: ignore[assignment]


class CachingEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self.header_table = _VersionedTable()
        self._cache: dict[tuple[Any, ...], tuple[int, bytes]] = {}

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if isinstance(headers, dict):
            return super().encode(headers, huffman)
        block = tuple(headers)
        table = self.header_table
        version = table.version
        if not table.resized:  # a pending size update must be emitted, once
            hit = self._cache.get(block)
            if hit is not None and hit[0] == version:
                return hit[1]
        encoded = super().encode(block, huffman)
        # Remembering a block that changed the table would be harmless (its version
        # never comes back) but useless.
        if table.version == version and huffman:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[block] = (version, encoded)
        return encoded


class CachingDecoder(Decoder):
    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _VersionedTable()
        self._cache: dict[tuple[bytes, bool], tuple[int, list[Any]]] = {}

    def decode(self, data: Any, raw: bool = False) -> Any:
        key = (bytes(data), raw)
        table = self.header_table
        version = table.version
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        decoded = super().decode(data, raw)
        if table.version == version:
            if len(self._cache) >= _MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = (version, list(decoded))
        return decoded
