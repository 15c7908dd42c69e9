"""The Length-Prefixed-Message codec (PROTOCOL.md §3): framing, incremental decoding, limits."""

from __future__ import annotations

import struct
import zlib

import pytest

from dubbo.status import ProtocolError, RpcError, StatusCode
from dubbo.wire.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    MessageDecoder,
    MessageTooLargeError,
    encode_message,
)


def frame(flag: int, length: int) -> bytes:
    return struct.pack(">BI", flag, length)


# -- encoding ----------------------------------------------------------------------------


def test_header_size_is_five():
    assert HEADER_SIZE == 5


def test_default_max_is_grpcio_4_mib():
    assert DEFAULT_MAX_MESSAGE_SIZE == 4 * 1024 * 1024


def test_encode_layout_uncompressed():
    assert encode_message(b"hello") == b"\x00\x00\x00\x00\x05hello"


def test_encode_layout_compressed_flag():
    assert encode_message(b"xy", compressed=True) == b"\x01\x00\x00\x00\x02xy"


def test_encode_length_is_big_endian():
    payload = b"a" * 0x010203
    assert encode_message(payload)[:5] == b"\x00\x00\x01\x02\x03"


def test_encode_empty_message():
    assert encode_message(b"") == b"\x00\x00\x00\x00\x00"


# -- decoding: round trips and stream splitting -----------------------------------------


def test_round_trip_single():
    dec = MessageDecoder()
    assert dec.feed(encode_message(b"hello world")) == [b"hello world"]
    assert dec.at_boundary()
    assert dec.buffered == 0


def test_decoded_payloads_are_bytes():
    dec = MessageDecoder()
    (msg,) = dec.feed(bytearray(encode_message(b"abc")))
    assert type(msg) is bytes
    assert msg == b"abc"


def test_one_byte_at_a_time():
    payloads = [b"first", b"", b"\x00\x01\x02" * 50, b"last message"]
    stream = b"".join(encode_message(p) for p in payloads)
    dec = MessageDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got.extend(dec.feed(stream[i : i + 1]))
    assert got == payloads
    assert dec.at_boundary()
    assert dec.buffered == 0


def test_every_split_point_of_one_message():
    payload = bytes(range(40))
    wire = encode_message(payload)
    for cut in range(len(wire) + 1):
        dec = MessageDecoder()
        first = dec.feed(wire[:cut])
        assert first == ([payload] if cut == len(wire) else [])
        assert dec.buffered == cut % len(wire)
        second = dec.feed(wire[cut:])
        assert first + second == [payload], cut
        assert dec.at_boundary()


def test_every_split_point_of_two_messages():
    payloads = [b"alpha", b"beta-beta"]
    wire = b"".join(encode_message(p) for p in payloads)
    for cut in range(len(wire) + 1):
        dec = MessageDecoder()
        assert dec.feed(wire[:cut]) + dec.feed(wire[cut:]) == payloads, cut
        assert dec.at_boundary()


def test_many_messages_in_one_feed():
    payloads = [f"message {i}".encode() for i in range(100)]
    dec = MessageDecoder()
    assert dec.feed(b"".join(encode_message(p) for p in payloads)) == payloads
    assert dec.at_boundary()


def test_feed_completes_one_and_starts_the_next():
    dec = MessageDecoder()
    wire = encode_message(b"one") + encode_message(b"two")
    assert dec.feed(wire[:-1]) == [b"one"]
    assert not dec.at_boundary()
    assert dec.buffered == HEADER_SIZE + 2
    assert dec.feed(wire[-1:]) == [b"two"]
    assert dec.at_boundary()


def test_empty_messages_are_delivered():
    dec = MessageDecoder()
    assert dec.feed(encode_message(b"") * 3) == [b"", b"", b""]
    assert dec.at_boundary()


def test_empty_message_between_others():
    dec = MessageDecoder()
    wire = encode_message(b"a") + encode_message(b"") + encode_message(b"b")
    assert dec.feed(wire) == [b"a", b"", b"b"]


def test_header_split_across_feeds():
    dec = MessageDecoder()
    wire = encode_message(b"payload")
    assert dec.feed(wire[:2]) == []
    assert dec.buffered == 2
    assert dec.feed(wire[2:4]) == []
    assert dec.buffered == 4
    assert dec.feed(wire[4:5]) == []
    assert dec.buffered == 5
    assert dec.feed(wire[5:]) == [b"payload"]
    assert dec.buffered == 0


def test_feed_empty_bytes_is_harmless():
    dec = MessageDecoder()
    assert dec.feed(b"") == []
    assert dec.at_boundary()
    dec.feed(b"\x00\x00")
    assert dec.feed(b"") == []
    assert dec.buffered == 2


def test_feed_accepts_memoryview():
    dec = MessageDecoder()
    wire = encode_message(b"abc") + encode_message(b"de")[:3]
    assert dec.feed(memoryview(wire)) == [b"abc"]
    assert dec.feed(memoryview(encode_message(b"de")[3:])) == [b"de"]


def test_pending_bytes_not_corrupted_by_reusing_caller_buffer():
    # The decoder must copy what it keeps: callers may reuse their receive buffer.
    dec = MessageDecoder()
    chunk = bytearray(encode_message(b"hello")[:4])
    assert dec.feed(chunk) == []
    chunk[:] = b"\xff\xff\xff\xff"
    assert dec.feed(encode_message(b"hello")[4:]) == [b"hello"]


# -- at_boundary / buffered ---------------------------------------------------------------


def test_fresh_decoder_is_at_boundary():
    dec = MessageDecoder()
    assert dec.at_boundary()
    assert dec.buffered == 0


def test_partial_body_is_not_a_boundary():
    dec = MessageDecoder()
    wire = encode_message(b"0123456789")
    dec.feed(wire[:8])
    assert not dec.at_boundary()
    assert dec.buffered == 8
    dec.feed(wire[8:])
    assert dec.at_boundary()


def test_partial_header_is_not_a_boundary():
    dec = MessageDecoder()
    dec.feed(b"\x00")
    assert not dec.at_boundary()
    assert dec.buffered == 1


def test_complete_header_of_empty_message_is_a_boundary():
    dec = MessageDecoder()
    assert dec.feed(b"\x00\x00\x00\x00\x00") == [b""]
    assert dec.at_boundary()


# -- size limits -------------------------------------------------------------------------


def test_message_exactly_at_max_is_accepted():
    dec = MessageDecoder(max_message_size=16)
    assert dec.feed(encode_message(b"x" * 16)) == [b"x" * 16]


def test_message_one_over_max_is_rejected():
    dec = MessageDecoder(max_message_size=16)
    with pytest.raises(MessageTooLargeError) as info:
        dec.feed(encode_message(b"x" * 17))
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_over_max_rejected_from_header_alone():
    dec = MessageDecoder(max_message_size=16)
    with pytest.raises(RpcError) as info:
        dec.feed(frame(0, 17))
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_default_max_is_inclusive():
    size = DEFAULT_MAX_MESSAGE_SIZE
    dec = MessageDecoder()
    (msg,) = dec.feed(encode_message(bytes(size)))
    assert len(msg) == size


def test_default_max_plus_one_rejected_before_body():
    dec = MessageDecoder()
    with pytest.raises(MessageTooLargeError) as info:
        dec.feed(frame(0, DEFAULT_MAX_MESSAGE_SIZE + 1))
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_two_gib_prefix_raises_on_header_alone():
    # grpcio answers this with RESOURCE_EXHAUSTED (PROTOCOL.md §9); we must not wait for
    # (or buffer) 2 GiB of body first.
    dec = MessageDecoder()
    with pytest.raises(MessageTooLargeError) as info:
        dec.feed(b"\x00\x80\x00\x00\x00")
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(info.value, RpcError)
    assert str(2**31) in info.value.details


def test_two_gib_prefix_raises_when_header_arrives_byte_by_byte():
    dec = MessageDecoder()
    header = b"\x00\xff\xff\xff\xff"
    for b in header[:-1]:
        assert dec.feed(bytes([b])) == []
    with pytest.raises(MessageTooLargeError):
        dec.feed(header[-1:])


def test_oversize_after_valid_messages_in_same_feed():
    dec = MessageDecoder(max_message_size=4)
    with pytest.raises(MessageTooLargeError):
        dec.feed(encode_message(b"ok") + frame(0, 5))


def test_no_limit_when_none():
    dec = MessageDecoder(max_message_size=None)
    payload = bytes(DEFAULT_MAX_MESSAGE_SIZE + 10)
    (msg,) = dec.feed(encode_message(payload))
    assert len(msg) == len(payload)


def test_no_limit_accepts_huge_prefix_without_raising():
    dec = MessageDecoder(max_message_size=None)
    assert dec.feed(b"\x00\x80\x00\x00\x00") == []
    assert not dec.at_boundary()


# -- flags and compression ---------------------------------------------------------------


@pytest.mark.parametrize("flag", [0x02, 0x03, 0x80, 0xFE, 0xFF])
def test_reserved_flag_bits_are_internal(flag):
    dec = MessageDecoder(decompress=zlib.decompress)
    with pytest.raises(ProtocolError) as info:
        dec.feed(frame(flag, 1) + b"x")
    assert info.value.code == StatusCode.INTERNAL


def test_reserved_flag_rejected_from_header_alone():
    dec = MessageDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(frame(0x04, 1000))


def test_compressed_without_decompressor_is_internal():
    dec = MessageDecoder()
    with pytest.raises(ProtocolError) as info:
        dec.feed(encode_message(zlib.compress(b"hi"), compressed=True))
    assert info.value.code == StatusCode.INTERNAL


def test_compressed_with_decompressor():
    dec = MessageDecoder(decompress=zlib.decompress)
    wire = encode_message(zlib.compress(b"hello" * 100), compressed=True)
    assert dec.feed(wire) == [b"hello" * 100]


def test_mixed_compressed_and_plain_messages():
    # grpcio compresses only when it helps: honour each message's flag (PROTOCOL.md §9).
    dec = MessageDecoder(decompress=zlib.decompress)
    wire = (
        encode_message(b"plain")
        + encode_message(zlib.compress(b"z" * 1000), compressed=True)
        + encode_message(b"plain again")
    )
    assert dec.feed(wire) == [b"plain", b"z" * 1000, b"plain again"]


def test_compressed_split_byte_by_byte():
    dec = MessageDecoder(decompress=zlib.decompress)
    wire = encode_message(zlib.compress(b"abc" * 30), compressed=True)
    got: list[bytes] = []
    for i in range(len(wire)):
        got.extend(dec.feed(wire[i : i + 1]))
    assert got == [b"abc" * 30]


def test_decompressed_size_checked_against_limit():
    bomb = zlib.compress(b"\x00" * 10_000)
    assert len(bomb) < 100
    dec = MessageDecoder(max_message_size=1000, decompress=zlib.decompress)
    with pytest.raises(MessageTooLargeError) as info:
        dec.feed(encode_message(bomb, compressed=True))
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED


def test_decompressed_size_exactly_at_limit_accepted():
    dec = MessageDecoder(max_message_size=1000, decompress=zlib.decompress)
    wire = encode_message(zlib.compress(b"\x00" * 1000), compressed=True)
    assert dec.feed(wire) == [b"\x00" * 1000]


# -- volume --------------------------------------------------------------------------------


def test_large_burst_in_small_chunks():
    count = 20_000
    payloads = [i.to_bytes(4, "big") * (i % 7) for i in range(count)]
    stream = b"".join(encode_message(p) for p in payloads)
    dec = MessageDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), 1000):
        got.extend(dec.feed(stream[i : i + 1000]))
    assert len(got) == count
    assert got == payloads
    assert dec.at_boundary()


def test_large_message_in_chunks():
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = encode_message(payload)
    dec = MessageDecoder()
    got: list[bytes] = []
    for i in range(0, len(wire), 16_384):
        got.extend(dec.feed(wire[i : i + 16_384]))
        if i + 16_384 < len(wire):
            assert dec.buffered == i + 16_384
    assert got == [payload]
    assert dec.buffered == 0


@pytest.mark.parametrize("seed", range(5))
def test_large_and_small_messages_in_random_chunks(seed):
    # Large bodies are gathered as chunks and joined once; small ones parse from a
    # buffer. Mixed in random cuts, every message must come out whole and in order.
    import random

    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.choice([0, 3, 100, 70_000, 300_000])) for _ in range(30)]
    wire = b"".join(encode_message(p) for p in payloads)
    dec = MessageDecoder()
    got: list[bytes] = []
    pos = 0
    while pos < len(wire):
        step = rng.choice([1, 5, 7, 1000, 65_536, 200_000])
        got.extend(dec.feed(wire[pos : pos + step]))
        pos += step
    assert got == payloads
    assert dec.at_boundary() and dec.buffered == 0
