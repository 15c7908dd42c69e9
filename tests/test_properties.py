"""Property tests (hypothesis) over the sans-I/O modules.

Whatever a peer sends (any byte split, any header list, any timeout string, any
compressed body) gives a result or a documented ``RpcError``, never another exception;
and what we send reads back as what was meant. Examples are bounded so the whole file
runs in a few seconds; ``HYPOTHESIS_PROFILE=long`` runs many more.
"""

from __future__ import annotations

import os
import re
import tracemalloc

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dubbo.status import (
    ProtocolError,
    RpcError,
    StatusCode,
    decode_grpc_message,
    encode_grpc_message,
    error_for,
    status_from_http,
    status_from_rst,
)
from dubbo.wire import compression
from dubbo.wire.deadline import MAX_TIMEOUT, Deadline, encode_timeout, parse_timeout
from dubbo.wire.framing import (
    HEADER_SIZE,
    MessageDecoder,
    MessageTooLargeError,
    encode_message,
    frame_message,
)
from dubbo.wire.metadata import (
    RequestHead,
    RequestRejected,
    ResponseStatus,
    check_response_headers,
    decode_metadata,
    encode_metadata,
    parse_request_headers,
    request_headers,
    status_from_headers,
)

settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.load_profile(PROFILE)


def few(n: int) -> settings:
    """``n`` examples for a costly property (the long profile keeps its own count)."""
    return settings(max_examples=n) if PROFILE == "default" else settings()


MAX_WIRE_TIMEOUT = 99_999_999 * 3600.0
_WIRE_TIMEOUT = re.compile(r"[0-9]{1,8}[numSMH]")
_PATTERN = bytes(range(256)) * 300  # 76,800 bytes: messages are slices of it


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats allowed: empty pieces)."""
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# -- dubbo.wire.framing ------------------------------------------------------------------------

# Small messages, and ones around the 64 KiB mark where the decoder switches to
# gathering a large body as chunks.
message_bodies = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda start, n: _PATTERN[start:start + n],
              st.integers(0, 255), st.sampled_from([0, 1, 4, 5, 6, 65535, 65536, 65537, 70000])),
)


@few(80)
@given(bodies=st.lists(message_bodies, max_size=6), flags=st.lists(st.booleans(), max_size=6),
       cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_any_split_of_a_valid_stream_gives_the_same_messages(bodies, flags, cuts):
    gzip = compression.get_codec("gzip")
    wire = b"".join(
        encode_message(gzip.compress(body), compressed=True) if flag else encode_message(body)
        for body, flag in zip(bodies, flags + [False] * len(bodies), strict=False))
    decoder = MessageDecoder(max_message_size=None,
                             decompress=lambda data: gzip.decompress(data, None))
    got: list[bytes] = []
    fed = 0
    for piece in split(wire, cuts):
        got += decoder.feed(piece)
        fed += len(piece)
        # What is buffered is exactly what the returned messages have not accounted for.
        consumed = sum(HEADER_SIZE + len(w) for w in _wire_bodies(wire, len(got)))
        assert decoder.buffered == fed - consumed
        assert decoder.at_boundary() == (fed == consumed)
    assert got == bodies
    assert decoder.at_boundary() and decoder.buffered == 0


def _wire_bodies(wire: bytes, count: int) -> list[bytes]:
    """The first ``count`` framed bodies in ``wire`` (as sent, compressed or not)."""
    out, pos = [], 0
    for _ in range(count):
        length = int.from_bytes(wire[pos + 1:pos + 5], "big")
        out.append(wire[pos + 5:pos + 5 + length])
        pos += 5 + length
    return out


@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8),
       limit=st.sampled_from([None, 0, 3, 100, 70_000]), gzip=st.booleans())
@example(data=b"\x00\xff\xff\xff\xff", cuts=[], limit=None, gzip=False)  # 4 GiB prefix
@example(data=b"\x02\x00\x00\x00\x00", cuts=[], limit=None, gzip=False)  # bad flag
@example(data=b"\x01\x00\x00\x00\x01x", cuts=[], limit=None, gzip=False)  # no encoding
def test_arbitrary_bytes_give_messages_or_a_protocol_error(data, cuts, limit, gzip):
    codec = compression.get_codec("gzip")
    decoder = MessageDecoder(
        max_message_size=limit,
        decompress=(lambda body: codec.decompress(body, limit)) if gzip else None)
    try:
        for piece in split(data, cuts):
            for message in decoder.feed(piece):
                assert isinstance(message, bytes)
                assert limit is None or len(message) <= limit
    except RpcError as exc:
        assert type(exc) in (ProtocolError, MessageTooLargeError)
        assert exc.code in (StatusCode.INTERNAL, StatusCode.RESOURCE_EXHAUSTED)
    assert decoder.buffered <= len(data)  # never more than it was given


@given(codec=st.sampled_from([None, *(compression.get_codec(n) for n in compression.SUPPORTED)]),
       body=message_bodies, cuts=st.lists(st.integers(0, 10**6), max_size=4))
def test_what_we_frame_is_what_the_peer_reads(codec, body, cuts):
    framed = frame_message(body, codec, None)
    wire = framed if isinstance(framed, bytes) else b"".join(framed)
    decoder = MessageDecoder(
        None, decompress=None if codec is None else lambda data: codec.decompress(data, None))
    got = [m for piece in split(wire, cuts) for m in decoder.feed(piece)]
    assert got == [body]


# -- dubbo.wire.deadline ----------------------------------------------------------------------

timeout_strings = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"\A[0-9]{0,10}[numSMHhs]?\Z"),
    st.binary(max_size=12),
)


@given(value=timeout_strings)
@example(value="99999999H")
@example(value=b"99999999H")
@example(value="１S")
def test_any_timeout_string_parses_to_seconds_or_value_error(value):
    try:
        seconds = parse_timeout(value)
    except ValueError:
        return
    assert isinstance(seconds, float)
    assert 0.0 <= seconds <= MAX_WIRE_TIMEOUT
    deadline = Deadline.after(seconds)  # what the server does with it
    assert 0.0 <= deadline.remaining() <= MAX_TIMEOUT


@given(seconds=st.one_of(st.floats(), st.floats(1e-10, 1e6), st.integers(-10, 10**12)))
@example(seconds=0.30000000000000004)
@example(seconds=1e12)
def test_encoded_timeouts_are_valid_and_never_shorter_than_asked(seconds):
    encoded = encode_timeout(seconds)
    assert _WIRE_TIMEOUT.fullmatch(encoded), encoded
    parsed = parse_timeout(encoded)
    if not seconds > 0:  # zero, negative, NaN
        assert parsed == 0.0
    elif seconds >= MAX_WIRE_TIMEOUT:
        assert encoded == "99999999H"
    else:
        assert parsed >= seconds  # rounded up: the server never gets less time
        assert parsed <= seconds * (1 + 1e-5) + 1e-9  # ...and barely more


@given(seconds=st.one_of(st.none(), st.floats(), st.integers(-(10**400), 10**400)))
def test_any_deadline_gives_waits_the_stdlib_accepts(seconds):
    deadline = Deadline.after(seconds)
    if seconds is None:
        assert deadline is None
        return
    remaining = deadline.remaining()
    assert 0.0 <= remaining <= MAX_TIMEOUT
    assert deadline.expired() or remaining > 0
    assert _WIRE_TIMEOUT.fullmatch(deadline.timeout())


# -- dubbo.wire.metadata ----------------------------------------------------------------------

_NAMES = [b":method", b":path", b":status", b":authority", b"content-type", b"te",
          b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding", b"grpc-status",
          b"grpc-message", b"grpc-status-details-bin", b"user-agent", b"x-bin", b"x-k"]
_VALUES = [b"POST", b"GET", b"/s.S/m", b"/", b"//m", b"/s/", b"application/grpc",
           b"application/grpc+proto", b"application/grpc-web", b"200", b"404", b"0",
           b"14", b"99", b"-1", b"99999999H", b"1S", b"gzip", b"%ff%", b"AAE", b"=="]
header_names = st.one_of(st.sampled_from(_NAMES), st.binary(max_size=20))
header_values = st.one_of(
    st.sampled_from(_VALUES),
    st.binary(max_size=40),
    st.integers(0, 6000).map(lambda n: b"9" * n),  # a :status or grpc-status of n digits
)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=12)


@given(headers=header_lists)
@example(headers=[(b":method", b"POST"), (b"content-type", b"application/grpc"),
                  (b":path", b"/s.S/m"), (b"grpc-timeout", b"99999999H")])
def test_any_request_head_is_accepted_or_rejected_with_a_status(headers):
    try:
        head = parse_request_headers(headers)
    except RequestRejected as exc:
        assert exc.http_status in (200, 405, 415)
        assert isinstance(exc.code, StatusCode) and exc.code is not StatusCode.OK
        assert isinstance(exc.details, str)
        return
    assert isinstance(head, RequestHead)
    assert head.service and head.method
    assert head.timeout is None or 0.0 <= head.timeout <= MAX_WIRE_TIMEOUT
    for key, value in head.metadata:
        assert isinstance(key, str)
        assert isinstance(value, bytes if key.endswith("-bin") else str)


@given(headers=header_lists)
@example(headers=[(b":status", b"9" * 5000)])  # issue 7: traceback in the client reader
@example(headers=[(b"grpc-status", b"9" * 5000)])
def test_any_response_head_gives_a_status_or_none(headers):
    result = check_response_headers(headers)
    assert result is None or isinstance(result, ResponseStatus)
    if result is not None:
        assert isinstance(result.code, StatusCode) and isinstance(result.details, str)
    status = status_from_headers(headers)
    assert isinstance(status.code, StatusCode) and isinstance(status.details, str)


metadata_keys = st.from_regex(r"\A[0-9a-z_.\-]{1,12}\Z").filter(
    lambda k: not k.startswith("grpc-") and k not in ("content-type", "te"))
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@given(pairs=st.lists(st.tuples(metadata_keys, st.one_of(printable, st.binary(max_size=30))),
                      max_size=6))
def test_metadata_round_trips(pairs):
    metadata = [(k, v) for k, v in pairs if k.endswith("-bin") or isinstance(v, str)]
    wire = encode_metadata(metadata)
    for key, value in wire:
        assert all(0x20 <= ord(c) <= 0x7E for c in key + value)
    received = decode_metadata([(k.encode(), v.encode()) for k, v in wire])
    assert received == _as_received(metadata)


def _as_received(metadata: list) -> list:
    """User metadata as the peer's decode_metadata gives it: ``-bin`` values as bytes."""
    return [(k, (v.encode() if isinstance(v, str) else v) if k.endswith("-bin") else v)
            for k, v in metadata]


@given(pairs=st.lists(st.tuples(
    st.one_of(metadata_keys, st.text(max_size=8)),
    st.one_of(st.text(max_size=8), st.binary(max_size=8), st.integers(-(2**70), 2**70))),
    max_size=4))
@example(pairs=[("x-bin", 10**12)])  # bytes(10**12) would allocate a terabyte
def test_user_metadata_is_encoded_or_refused_with_value_error(pairs):
    try:
        wire = encode_metadata(pairs)
    except ValueError:
        return
    for key, value in wire:
        assert all(0x20 <= ord(c) <= 0x7E for c in key + value)


@given(service=st.from_regex(r"\A[A-Za-z0-9_.]{1,20}\Z"),
       method=st.from_regex(r"\A[A-Za-z0-9_]{1,20}\Z"),
       timeout=st.one_of(st.none(), st.floats(0, 1e13)),
       pairs=st.lists(st.tuples(metadata_keys, printable), max_size=4))
@example(service="s.S", method="m", timeout=1e12, pairs=[("x-bin", "\x00 is text")])
def test_request_headers_parse_back_to_what_was_sent(service, method, timeout, pairs):
    sent = request_headers(f"/{service}/{method}", "127.0.0.1:1", timeout=timeout,
                           metadata=encode_metadata(pairs))
    head = parse_request_headers([(k.encode(), v.encode()) for k, v in sent])
    assert (head.service, head.method) == (service, method)
    if timeout is None:
        assert head.timeout is None
    else:
        assert head.timeout >= min(timeout, MAX_WIRE_TIMEOUT)
    assert head.metadata[1:] == _as_received(pairs)  # after our user-agent


# -- dubbo.wire.compression -------------------------------------------------------------------

CODECS = [compression.get_codec(name) for name in compression.SUPPORTED]


@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=300),
       limit=st.sampled_from([None, 0, 10, 1000]))
@example(codec=compression.get_codec("gzip"), data=b"\x1f\x8b", limit=None)
@example(codec=compression.get_codec("bzip2"), data=b"BZh9", limit=None)
def test_decompressing_arbitrary_bytes_gives_bytes_or_an_rpc_error(codec, data, limit):
    try:
        out = codec.decompress(data, limit)
    except RpcError as exc:
        assert type(exc) in (ProtocolError, MessageTooLargeError)
        assert exc.code in (StatusCode.INTERNAL, StatusCode.RESOURCE_EXHAUSTED)
        return
    assert isinstance(out, bytes)
    assert limit is None or len(out) <= limit


@given(codec=st.sampled_from(CODECS), data=st.binary(max_size=2000))
def test_compression_round_trips_and_the_limit_is_exact(codec, data):
    compressed = codec.compress(data)
    assert codec.decompress(compressed, None) == data
    assert codec.decompress(compressed, len(data)) == data
    if data:
        with pytest.raises(MessageTooLargeError) as info:
            codec.decompress(compressed, len(data) - 1)
        assert info.value.code is StatusCode.RESOURCE_EXHAUSTED


_BOMB_SIZE = 8 * 1024 * 1024
_bombs: dict[str, bytes] = {}


def _bomb(codec: compression.Codec) -> bytes:
    if codec.name not in _bombs:
        _bombs[codec.name] = codec.compress(bytes(_BOMB_SIZE))
    return _bombs[codec.name]


def _peak_memory(fn) -> int:
    """The most memory traced while ``fn`` ran, over what was in use before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
        except RpcError:
            pass
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@few(30)
@given(codec=st.sampled_from([c for c in CODECS if c.name != "identity"]),
       limit=st.integers(0, 1024 * 1024))
@example(codec=compression.get_codec("gzip"), limit=4 * 1024 * 1024)  # the default
def test_a_bomb_is_refused_without_inflating_past_the_limit(codec, limit):
    bomb = _bomb(codec)
    assert len(bomb) < 64 * 1024 < _BOMB_SIZE  # really a bomb
    with pytest.raises(MessageTooLargeError) as info:
        codec.decompress(bomb, limit)
    assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
    # The same through the message decoder, as server and client use it.
    decoder = MessageDecoder(limit, decompress=lambda body: codec.decompress(body, limit))
    with pytest.raises(MessageTooLargeError):
        decoder.feed(encode_message(bomb, compressed=True))
    # Memory: the decompressor's own state (seen on a tiny message) plus the limit and
    # one 32 KiB piece, whatever the bomb would inflate to. A single capped call held
    # twice the limit (CPython copies its output blocks into the result).
    tiny = codec.compress(b"x")
    state = _peak_memory(lambda: codec.decompress(tiny, None))
    peak = _peak_memory(lambda: codec.decompress(bomb, limit))
    assert peak <= state + limit + 48 * 1024, (peak, state, limit)


# -- dubbo.status ------------------------------------------------------------------------

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@given(message=any_text)
@example(message="\ud800 lone surrogate")
@example(message="50% \x00\n日本")
def test_grpc_message_encodes_to_a_valid_header_value_and_back(message):
    wire = encode_grpc_message(message)
    assert all(0x20 <= ord(c) <= 0x7E for c in wire)
    decoded = decode_grpc_message(wire.encode("ascii"))
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be sent; they are replaced
        assert len(decoded) == len(message)
    else:
        assert decoded == message


@given(raw=st.one_of(st.binary(max_size=60), any_text))
@example(raw="\ud800")
@example(raw=b"%e6%97%a5%")
def test_any_grpc_message_decodes_to_text(raw):
    assert isinstance(decode_grpc_message(raw), str)


@given(value=st.one_of(st.binary(max_size=8), st.text(max_size=8), st.integers(),
                       st.integers(0, 6000).map(lambda n: b"1" * n), st.none()))
def test_any_grpc_status_value_is_a_status_code(value):
    code = StatusCode.from_wire(value)
    assert isinstance(code, StatusCode)
    if isinstance(value, bytes) and value.isdigit() and len(value) <= 2 and int(value) <= 16:
        assert code == int(value)


@given(number=st.integers(-(2**64), 2**64), details=any_text)
def test_status_mappings_and_errors_are_total(number, details):
    assert isinstance(status_from_http(number), StatusCode)
    assert isinstance(status_from_rst(number), StatusCode)
    code = StatusCode(number % 17)
    error = error_for(code, details)
    assert isinstance(error, RpcError) and error.code is code
    assert isinstance(str(error), str) and error.details == details

