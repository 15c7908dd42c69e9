"""The caching HPACK coders must be indistinguishable from hpack's own, byte for byte."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

from dubbo.hpack_cache import CachingDecoder, CachingEncoder

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
