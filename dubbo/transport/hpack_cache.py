"""HPACK encoder and decoder that remember header blocks seen before.

gRPC repeats the same header blocks call after call: request headers, response headers,
``grpc-status: 0`` trailers. Once their fields sit in the HPACK dynamic table, each
block encodes to (and decodes from) the same bytes, yet hpack redoes the work in Python
every time. A result is reused only while the dynamic table is exactly as it was when
it was computed: the table counts its changes (``version``, see h2_internals), and
only a block whose coding left the table unchanged is remembered, so the bytes on the
wire are the ones hpack itself would produce (RFC 7541 §2.3: coding depends on nothing
else).

Peers choose what we decode, so each cache is bounded in bytes as well as entries: a
block is counted as its encoded bytes plus, per field, name + value + 32 (the way RFC
7541 §4.1 sizes table entries; a few indexed bytes may decode to 64 KiB). A block
costing more than ``_MAX_BLOCK_BYTES`` is never remembered (gRPC's repeated blocks are
a few hundred bytes), and the cache is emptied when the next block would take it past
``_MAX_BYTES``, so a connection holds at most that much whatever it is sent.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from hpack import Decoder, Encoder

from .h2_internals import VersionedTable, install_versioned_table, resize_pending

__all__ = ["CachingDecoder", "CachingEncoder"]

_MAX_ENTRIES = 256  # distinct blocks remembered per connection and direction
_MAX_BYTES = 256 * 1024  # their total cost (see above), per connection and direction
_MAX_BLOCK_BYTES = 4 * 1024  # the largest block worth remembering
_FIELD_OVERHEAD = 32


def _fields_cost(fields: Any) -> int:
    return sum(_FIELD_OVERHEAD + len(field[0]) + len(field[1]) for field in fields)


_K = TypeVar("_K")
_V = TypeVar("_V")


class _BlockCache(Generic[_K, _V]):
    """Header blocks remembered with the table version they were coded at, bounded in
    entries and in bytes. The coders look ``entries`` up directly (the hot path); only
    ``put`` adds to it. Guarded by whatever lock guards the coder that owns it."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: dict[_K, tuple[int, _V, int]] = {}  # key -> (version, value, cost)
        self.size = 0  # sum of the entries' costs

    def put(self, key: _K, version: int, value: _V, cost: int) -> None:
        if cost > _MAX_BLOCK_BYTES:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= old[2]
        if len(self.entries) >= _MAX_ENTRIES or self.size + cost > _MAX_BYTES:
            self.entries.clear()
            self.size = 0
        self.entries[key] = (version, value, cost)
        self.size += cost


class CachingEncoder(Encoder):
    def __init__(self) -> None:
        super().__init__()
        self._table: VersionedTable = install_versioned_table(self)
        self._cache: _BlockCache[tuple[Any, ...], bytes] = _BlockCache()

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        if isinstance(headers, dict):
            return super().encode(headers, huffman)
        block = tuple(headers)
        table = self._table
        version = table.version
        if not resize_pending(table):  # a pending size update must be emitted, once
            hit = self._cache.entries.get(block)
            if hit is not None and hit[0] == version:
                return hit[1]
        encoded = super().encode(block, huffman)
        # Remembering a block that changed the table would be harmless (its version
        # never comes back) but useless.
        if table.version == version and huffman:
            self._cache.put(block, version, encoded, len(encoded) + _fields_cost(block))
        return encoded


class CachingDecoder(Decoder):
    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self._table: VersionedTable = install_versioned_table(self)
        self._cache: _BlockCache[tuple[bytes, bool], list[Any]] = _BlockCache()

    def decode(self, data: Any, raw: bool = False) -> Any:
        if len(data) > _MAX_BLOCK_BYTES:  # never cached: not even worth hashing
            return super().decode(data, raw)
        key = (bytes(data), raw)
        table = self._table
        version = table.version
        hit = self._cache.entries.get(key)
        if hit is not None and hit[0] == version:
            return list(hit[1])
        decoded = super().decode(data, raw)
        if table.version == version:
            self._cache.put(key, version, list(decoded), len(key[0]) + _fields_cost(decoded))
        return decoded
