"""hpack_first: a new connection's first header blocks, coded once per process.

What must hold: the bytes on the wire and the tables are exactly what plain hpack makes
for every block, hit or miss, whatever the blocks and the order; a peer's odd blocks
cannot grow the process-wide map past its bounds; a coder whose table changed some
other way (a size update) leaves the shared path and codes like hpack.
"""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from dubbo.transport import hpack_first
from dubbo.transport.hpack_first import FIRST_BLOCKS, FirstBlocksDecoder, FirstBlocksEncoder

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Echo"),
           (b":authority", b"127.0.0.1:50051"), (b"content-type", b"application/grpc"),
           (b"te", b"trailers"), (b"grpc-timeout", b"4999m"), (b"user-agent", b"test")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]


def _table(coder: hpack.Encoder | hpack.Decoder) -> tuple[object, ...]:
    table = coder.header_table
    return (list(table.dynamic_entries), table.maxsize)


def _same_as_hpack(blocks: list[list[tuple[bytes, bytes]]]) -> None:
    plain_encoder, plain_decoder = hpack.Encoder(), hpack.Decoder()
    encoder, decoder = FirstBlocksEncoder(), FirstBlocksDecoder()
    for block in blocks:
        wire = plain_encoder.encode(block)
        assert encoder.encode(block) == wire
        assert _table(encoder) == _table(plain_encoder)
        assert decoder.decode(wire, raw=True) == plain_decoder.decode(wire, raw=True) == block
        assert _table(decoder) == _table(plain_decoder)


def _count_encodes(monkeypatch) -> list[object]:  # type: ignore[no-untyped-def]
    """The blocks hpack's own encoder is asked to code from now on."""
    calls: list[object] = []
    original = hpack.Encoder.encode

    def counting(self, headers, huffman=True):  # type: ignore[no-untyped-def]
        calls.append(headers)
        return original(self, headers, huffman)

    monkeypatch.setattr(hpack.Encoder, "encode", counting)
    return calls


def test_connections_after_the_first_take_its_blocks_and_code_the_same() -> None:
    blocks = [REQUEST, RESPONSE, TRAILERS, REQUEST, RESPONSE, TRAILERS]
    _same_as_hpack(blocks)  # the first connection codes and remembers
    hits_before = dict(hpack_first._encoded.steps)
    _same_as_hpack(blocks)  # later ones replay, with the same bytes and tables
    _same_as_hpack(blocks)
    assert hpack_first._encoded.steps.keys() >= hits_before.keys()


def test_a_later_connection_replays_without_coding(monkeypatch) -> None:
    _same_as_hpack([REQUEST, TRAILERS])
    calls = _count_encodes(monkeypatch)
    encoder = FirstBlocksEncoder()
    encoder.encode(REQUEST)
    encoder.encode(TRAILERS)
    assert calls == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([REQUEST, RESPONSE, TRAILERS,
                                 [(b"x-custom", b"1")], [(b"x-custom", b"2")],
                                 [(b"big", b"v" * 3000)]]),
                min_size=1, max_size=FIRST_BLOCKS + 3))
def test_any_sequence_of_blocks_codes_as_hpack_does(blocks) -> None:  # type: ignore[no-untyped-def]
    _same_as_hpack(blocks)
    _same_as_hpack(blocks)


def test_size_update_leaves_the_shared_path() -> None:
    _same_as_hpack([REQUEST])
    plain, encoder = hpack.Encoder(), FirstBlocksEncoder()
    for coder in (plain, encoder):
        coder.header_table_size = 256  # the peer's SETTINGS_HEADER_TABLE_SIZE
    for block in (REQUEST, RESPONSE, REQUEST):
        assert encoder.encode(block) == plain.encode(block)
        assert _table(encoder) == _table(plain)
    assert "encode" in vars(encoder)  # a plain CachingEncoder from now on


def test_decoder_limits_are_part_of_what_is_remembered() -> None:
    wire = hpack.Encoder().encode(REQUEST)
    assert FirstBlocksDecoder().decode(wire, raw=True) == REQUEST
    small = FirstBlocksDecoder(max_header_list_size=64)
    try:
        small.decode(wire, raw=True)
    except hpack.OversizedHeaderListError:
        pass
    else:
        raise AssertionError("a block over the header list limit was accepted")


def test_odd_blocks_keep_the_map_bounded() -> None:
    for i in range(hpack_first._MAX_STEPS * 2):
        decoder = FirstBlocksDecoder()
        decoder.decode(hpack.Encoder().encode([(b"x-odd", str(i).encode())]), raw=True)
        assert len(hpack_first._decoded.steps) <= hpack_first._MAX_STEPS
        assert hpack_first._decoded._size <= hpack_first._MAX_BYTES


def test_blocks_with_credentials_are_never_shared_between_connections() -> None:
    """A hit is faster than a miss: a peer timing its own first block must not learn
    that another connection sent the same secret."""
    for name in (b"authorization", b"cookie", b"x-api-key", b"x-auth-token", b"Session-Id"):
        secret = REQUEST + [(name, b"hunter2")]
        wire = hpack.Encoder().encode(secret)
        for _ in range(2):
            assert FirstBlocksDecoder().decode(wire, raw=True) == secret
            assert FirstBlocksEncoder().encode(secret) == wire
        assert not any(secret_field in key[1] for key in hpack_first._encoded.steps
                       for secret_field in [(name, b"hunter2")])
        assert not any(wire == key[1] for key in hpack_first._decoded.steps)
    _same_as_hpack([REQUEST + [(b"authorization", b"Bearer x")], RESPONSE])


def test_the_peer_setting_an_unchanged_table_size_keeps_the_shared_path(monkeypatch) -> None:
    """h2 sets the encoder's table size to the peer's SETTINGS_HEADER_TABLE_SIZE even
    when it is the default: the table's contents are unchanged, so the server's first
    response headers still come from the map."""
    _same_as_hpack([RESPONSE, TRAILERS])
    calls = _count_encodes(monkeypatch)
    encoder = FirstBlocksEncoder()
    encoder.header_table_size = 4096  # what h2 does on the peer's SETTINGS
    plain = hpack.Encoder()
    assert encoder.encode(RESPONSE) == plain.encode(RESPONSE)
    assert encoder.encode(TRAILERS) == plain.encode(TRAILERS)
    assert len(calls) == 2  # only the plain encoder's
    assert _table(encoder) == _table(plain)


def test_restoring_never_moves_a_table_version_back() -> None:
    """Versions key each connection's own block cache: one the table had before must
    never come back with other contents."""
    _same_as_hpack([REQUEST])
    encoder = FirstBlocksEncoder()
    for _ in range(10):
        encoder.header_table_size = 4096  # version bumps, contents unchanged
    before = encoder.header_table.version
    encoder.encode(REQUEST)  # a hit: the table is restored
    assert encoder.header_table.version > before
