"""A connection's first header blocks, HPACK-coded once per process.

Every new connection starts both HPACK tables empty, so it codes its first request
headers, response headers and trailers from scratch: Huffman coding in pure Python,
~200 µs a block each way, the largest part of setting a connection up. Yet every
connection of a client (or of a server) codes the same first blocks from the same empty
table, and what coding gives depends only on the table and the block (RFC 7541 §2.3).
So the coders here remember, process-wide, what coding block B from table state S gave:
the bytes (or fields) and the table after it. A later connection in state S that codes B
takes that result and puts its table in the remembered state, with the bytes and the
table exactly as hpack would have made them.

A state is named by the path of blocks that led to it from the empty table (a small
number per step). Each coder follows its path for its first ``FIRST_BLOCKS`` blocks, then
(or as soon as its table changes some other way: a size update, a block too large)
becomes a plain ``CachingEncoder``/``CachingDecoder`` for good. Peers choose what we
decode, so the map is bounded in steps and in bytes (each step counted as its key, its
result and its table), and emptied when full: a peer sending odd first blocks costs
other connections a miss, never memory. A block with a field that looks like a
credential (authorization, cookies, tokens, ...) is never shared: a peer could otherwise
time its own first block to learn whether another connection sent the same secret.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Generic, NamedTuple, TypeVar

from .h2_internals import TableState, resize_pending, table_restore, table_snapshot
from .hpack_cache import CachingDecoder, CachingEncoder

__all__ = ["FirstBlocksDecoder", "FirstBlocksEncoder", "FIRST_BLOCKS"]

FIRST_BLOCKS = 4  # blocks per coder taken from (and added to) the process-wide map
_MAX_STEPS = 512
_MAX_BYTES = 2 * 1024 * 1024
_MAX_BLOCK_BYTES = 4 * 1024  # a block larger than this ends the coder's path
_MAX_STEP_COST = 16 * 1024  # a step costing more is used once, not remembered
_FIELD_OVERHEAD = 32

_R = TypeVar("_R")


class _Step(NamedTuple, Generic[_R]):
    result: _R
    state: int  # the state the block leads to
    table: TableState  # the table in that state
    cost: int


class _Steps(Generic[_R]):
    """The process-wide map (state, block) -> step. Its dict is read without a lock
    (a lookup is atomic); ``_lock`` guards adding and emptying."""

    def __init__(self) -> None:
        self.steps: dict[tuple[Any, ...], _Step[_R]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def add(self, key: tuple[Any, ...], result: _R, changed: bool, state: int,
            table: TableState, cost: int, shareable: bool = True) -> _Step[_R]:
        """The step for a block just coded; a new state if it changed the table.
        Remembered for other connections only if ``shareable`` and not too costly."""
        step = _Step(result, next(_state_ids) if changed else state, table, cost)
        if shareable and cost <= _MAX_STEP_COST:
            with self._lock:
                if len(self.steps) >= _MAX_STEPS or self._size + cost > _MAX_BYTES:
                    self.steps = {}
                    self._size = 0
                old = self.steps.get(key)
                if old is None:
                    self.steps[key] = step
                    self._size += cost
        return step


_state_ids = itertools.count(1)  # next() on it is atomic in CPython
_EMPTY = 0  # the empty table's state
_encoded: _Steps[bytes] = _Steps()
_decoded: _Steps[list[Any]] = _Steps()


# Blocks carrying credentials are never shared between connections: a hit is faster
# than a miss, and a peer timing its own first block must not learn whether another
# connection sent the same secret (field names, lowercase, containing any of these;
# pseudo-headers such as :authority are not credentials).
_SECRET_NAMES = ("auth", "cookie", "token", "secret", "passw", "key", "session")


def _shareable(fields: Any) -> bool:
    for field in fields:
        name = field[0]
        name = (name.decode("latin-1") if isinstance(name, (bytes, bytearray))
                else str(name)).lower()
        if not name.startswith(":") and any(word in name for word in _SECRET_NAMES):
            return False
    return True


def _unchanged(coder: FirstBlocksEncoder | FirstBlocksDecoder, table: Any) -> bool:
    """The table's version moved but not its contents (h2 sets the peer's unchanged
    SETTINGS_HEADER_TABLE_SIZE again): the coder stays in its state, at that version."""
    if table_snapshot(table)[:4] != coder._contents[:4]:
        return False
    coder._version = table.version
    return True


def _fields_cost(fields: Any) -> int:
    return sum(_FIELD_OVERHEAD + len(field[0]) + len(field[1]) for field in fields)


def _table_cost(table: TableState) -> int:
    return _fields_cost(table[0])


class FirstBlocksEncoder(CachingEncoder):
    """A ``CachingEncoder`` whose first blocks come from the process-wide map.
    Guarded by whatever lock guards the coder (the transport's)."""

    def __init__(self) -> None:
        super().__init__()
        self._state = _EMPTY
        self._version = self._table.version  # the table's version in ``_state``
        self._contents = table_snapshot(self._table)  # the table in ``_state``
        self._left = FIRST_BLOCKS

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        table = self._table
        if (table.version != self._version and not _unchanged(self, table)) \
                or resize_pending(table) or isinstance(headers, dict):
            return self._leave(headers, huffman)
        block = tuple(headers)
        for field in block:
            if type(field) is not tuple:  # never-indexed fields code differently
                return self._leave(block, huffman)
        key = (self._state, block, huffman)
        step = _encoded.steps.get(key)
        if step is not None:
            _replay(self, step, table)
            encoded = step.result
        else:
            encoded = CachingEncoder.encode(self, block, huffman)
            step = _record(self, _encoded, key, encoded, table, len(encoded), block)
        _advance(self, step, table)
        return encoded

    def _leave(self, headers: Any, huffman: bool) -> bytes:
        self._plain()
        return CachingEncoder.encode(self, headers, huffman)

    def _plain(self) -> None:
        """From now on a plain CachingEncoder (no lookup, no extra call)."""
        self.encode = CachingEncoder.encode.__get__(self)  # type: ignore[method-assign]


def _replay(coder: Any, step: _Step[Any], table: Any) -> None:
    """A remembered step taken: the table as the block left it (as it is already when
    the block did not change it)."""
    if step.state != coder._state:
        table_restore(table, step.table)


def _record(coder: Any, steps: _Steps[_R], key: tuple[Any, ...], result: _R, table: Any,
            block_size: int, fields: Any) -> _Step[_R]:
    """The step a block ``coder`` just coded made, remembered for other connections
    if it may be; its cost counts the block, its fields and the table after it."""
    snapshot = table_snapshot(table)
    return steps.add(key, result, table.version != coder._version, coder._state, snapshot,
                     block_size + _fields_cost(fields) + _table_cost(snapshot),
                     _shareable(fields))


def _advance(coder: Any, step: Any, table: Any) -> None:
    """A first block coded (or replayed) by ``coder``: where its table is now; after
    the last first block the coder turns plain."""
    coder._state = step.state
    coder._version = table.version
    coder._contents = step.table
    coder._left -= 1
    if not coder._left:
        coder._plain()


class FirstBlocksDecoder(CachingDecoder):
    """A ``CachingDecoder`` whose first blocks come from the process-wide map.
    Guarded by whatever lock guards the coder (the transport's reader)."""

    def __init__(self, max_header_list_size: int = 2**16) -> None:
        super().__init__(max_header_list_size)
        self._state = _EMPTY
        self._version = self._table.version
        self._contents = table_snapshot(self._table)
        self._left = FIRST_BLOCKS

    def decode(self, data: Any, raw: bool = False) -> Any:
        table = self._table
        if (table.version != self._version and not _unchanged(self, table)) \
                or len(data) > _MAX_BLOCK_BYTES:
            return self._leave(data, raw)
        block = bytes(data)
        # What decoding accepts depends on these limits too.
        key = (self._state, block, raw, self.max_allowed_table_size,
               self.max_header_list_size)
        step = _decoded.steps.get(key)
        if step is not None:
            _replay(self, step, table)
            decoded = list(step.result)
        else:
            decoded = CachingDecoder.decode(self, block, raw)  # raises on bad input
            step = _record(self, _decoded, key, list(decoded), table, len(block), decoded)
        _advance(self, step, table)
        return decoded

    def _leave(self, data: Any, raw: bool) -> Any:
        self._plain()
        return CachingDecoder.decode(self, data, raw)

    def _plain(self) -> None:
        self.decode = CachingDecoder.decode.__get__(self)  # type: ignore[method-assign]
