"""The caching HPACK coders must be indistinguishable from hpack's own, byte for byte."""

from __future__ import annotations

import random
import tracemalloc

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from dubbo.transport.hpack_cache import _MAX_BYTES, CachingDecoder, CachingEncoder

BLOCKS = [
    [(":method", "POST"), (":scheme", "http"), (":path", "/s.S/m"), (":authority", "h:1"),
     ("content-type", "application/grpc"), ("te", "trailers")],
    [(":status", "200"), ("content-type", "application/grpc")],
    [("grpc-status", "0")],
    [("grpc-status", "5"), ("grpc-message", "not found")],
]


def _random_block(rng: random.Random) -> list:
    if rng.random() < 0.6:
        return list(rng.choice(BLOCKS))
    block = list(rng.choice(BLOCKS))
    for _ in range(rng.randint(1, 3)):  # fresh literals: these change the table
        block.append((f"x-key-{rng.randint(0, 40)}", "v" * rng.randint(0, 300)))
    if rng.random() < 0.2:
        block.append(NeverIndexedHeaderTuple("x-secret", str(rng.random())))
    return block


@pytest.mark.parametrize("seed", range(20))
def test_same_bytes_and_headers_as_hpack(seed):
    rng = random.Random(seed)
    plain_enc, cached_enc = Encoder(), CachingEncoder()
    plain_dec, cached_dec = Decoder(), CachingDecoder()
    for step in range(400):
        if rng.random() < 0.02:  # the peer changed SETTINGS_HEADER_TABLE_SIZE
            size = rng.choice([0, 256, 1024, 4096])
            plain_enc.header_table_size = cached_enc.header_table_size = size
        block = _random_block(rng)
        expected = plain_enc.encode(block)
        got = cached_enc.encode(block)
        assert got == expected, f"step {step}: encoder diverged"
        assert cached_dec.decode(got, raw=True) == plain_dec.decode(expected, raw=True)
        assert list(cached_enc.header_table.dynamic_entries) == \
            list(plain_enc.header_table.dynamic_entries)


def test_repeated_blocks_are_served_from_the_cache():
    enc, dec = CachingEncoder(), CachingDecoder()
    first = enc.encode(BLOCKS[0])
    second = enc.encode(BLOCKS[0])  # now fully indexed: leaves the table alone
    assert enc.encode(BLOCKS[0]) is second
    dec.decode(first, raw=True)
    decoded = dec.decode(second, raw=True)
    again = dec.decode(second, raw=True)
    assert again == decoded and again is not decoded  # a fresh list each time


# -- bounded in bytes (issue 7: distinct header blocks made a connection hold ~47 MiB) --


def _cached_bytes(cache) -> int:
    """The cache's size recomputed from what it holds (not from its own counter)."""
    total = 0
    for key, (_, value, _) in cache.entries.items():
        if isinstance(value, bytes):  # encoder: key is the block, value its encoding
            fields, encoded = key, value
        else:  # decoder: key is (data, raw), value the decoded fields
            fields, encoded = value, key[0]
        total += len(encoded) + sum(32 + len(f[0]) + len(f[1]) for f in fields)
    return total


def _hostile_blocks(count: int):
    """Distinct blocks as a hostile peer would send them: each leaves the table as it
    is (so it is cacheable), alternating a ~1.9 KB literal with ~60 KB decoded from a
    few dozen bytes (15 references to one 4,000-byte table entry)."""
    enc = Encoder()
    yield enc.encode([("x-big", "A" * 4000)])  # puts the entry in the table
    rng = random.Random(7)
    for i in range(count):
        if i % 2:
            yield enc.encode([("x-big", "A" * 4000)] * 15 + [("x-n", str(i), True)])
        else:
            value = "".join(rng.choice("abcdefghij") for _ in range(1900))
            yield enc.encode([("x-n", f"{i}-{value}", True)], huffman=False)


def test_decode_cache_stays_under_its_byte_bound_and_exact():
    plain, cached = Decoder(), CachingDecoder()
    largest = 0
    for data in _hostile_blocks(1200):
        assert cached.decode(data, raw=True) == plain.decode(data, raw=True)
        held = _cached_bytes(cached._cache)
        assert held == cached._cache.size
        assert held <= _MAX_BYTES
        largest = max(largest, held)
    assert largest > _MAX_BYTES // 2  # the large blocks really were cached
    # The cache still serves the blocks gRPC repeats.
    enc = Encoder()
    enc.encode(BLOCKS[1])
    repeated = enc.encode(BLOCKS[1])
    cached.decode(repeated, raw=True)
    assert (repeated, True) in cached._cache.entries


def test_decode_cache_never_holds_a_block_that_decodes_big():
    dec = CachingDecoder()
    blocks = list(_hostile_blocks(40))
    dec.decode(blocks[0], raw=True)
    for data in blocks[2::2]:  # each ~60 KB once decoded
        assert len(data) < 200
        dec.decode(data, raw=True)
        assert (data, True) not in dec._cache.entries


def test_decode_cache_memory_stays_bounded():
    # What the process really holds, seen by tracemalloc: without the byte bound up to
    # 255 of these distinct 30 KB blocks stayed cached, decoded, at once (~7.5 MiB).
    enc, dec = Encoder(), CachingDecoder()
    blocks = [enc.encode([("x-n", f"{i}-" + "v" * 30_000, True)], huffman=False)
              for i in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for data in blocks:
            dec.decode(data, raw=True)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 2 * _MAX_BYTES, f"{peak} bytes held at the peak"


def test_encode_cache_stays_under_its_byte_bound_and_exact():
    plain, cached = Encoder(), CachingEncoder()
    rng = random.Random(3)
    largest = 0
    for i in range(600):
        value = "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice([100, 1900])))
        # A handler echoing a peer's metadata: never indexed, so each block is cacheable.
        block = [(":status", "200"), NeverIndexedHeaderTuple("x-echo", f"{i}{value}")]
        assert cached.encode(block) == plain.encode(block)
        held = _cached_bytes(cached._cache)
        assert held == cached._cache.size <= _MAX_BYTES
        largest = max(largest, held)
    assert largest > _MAX_BYTES // 2
