"""dubbo.wire.compression: codecs, bomb safety, negotiation helpers, and grpcio wire interop."""

from __future__ import annotations

import bz2
import gzip
import os
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from dubbo.status import ProtocolError, RpcError, StatusCode
from dubbo.wire.compression import (
    IDENTITY,
    SUPPORTED,
    Codec,
    accept_encoding_header,
    choose_response_encoding,
    compress_message,
    get_codec,
    parse_accept_encoding,
    unsupported_encoding_error,
)
from dubbo.wire.framing import MessageTooLargeError, encode_message

MiB = 1024 * 1024
COMPRESSING = [name for name in SUPPORTED if name != "identity"]

_RANDOM = os.urandom(MiB)
PAYLOADS = {
    "empty": b"",
    "small": b"hello, triple",
    "compressible_1MiB": (b"dubbo triple compression " * 50000)[:MiB],
    "random_1MiB": _RANDOM,
}


def codec(name: str) -> Codec:
    c = get_codec(name)
    assert c is not None
    return c


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.parametrize("name", SUPPORTED)
def test_round_trip(name: str, kind: str) -> None:
    c = codec(name)
    data = PAYLOADS[kind]
    assert c.decompress(c.compress(data), None) == data
    assert c.decompress(c.compress(data), len(data)) == data


def test_supported_order_and_header() -> None:
    assert SUPPORTED[:4] == ("identity", "deflate", "gzip", "bzip2")
    assert set(SUPPORTED) <= {"identity", "deflate", "gzip", "bzip2", "zstd"}
    header = accept_encoding_header()
    assert header == ",".join(SUPPORTED)
    assert " " not in header
    assert header.split(",") == list(SUPPORTED)  # what grpc-js (no trimming) sees


def test_get_codec_case_and_whitespace() -> None:
    assert get_codec(" GZip ") is codec("gzip")
    assert get_codec("Identity") is IDENTITY
    assert get_codec("snappy") is None
    assert get_codec("") is None
    assert codec("deflate").name == "deflate"


def test_gzip_interoperates_with_stdlib() -> None:
    data = PAYLOADS["compressible_1MiB"]
    ours = codec("gzip").compress(data)
    assert ours[:2] == b"\x1f\x8b"
    assert gzip.decompress(ours) == data
    assert codec("gzip").decompress(gzip.compress(data), None) == data
    assert codec("gzip").decompress(gzip.compress(data, mtime=0), MiB) == data


def test_deflate_is_zlib_wrapped() -> None:
    # grpc core: deflateInit2(..., 15 | (gzip ? 16 : 0), ...) -> RFC 1950 zlib stream.
    data = PAYLOADS["compressible_1MiB"]
    ours = codec("deflate").compress(data)
    assert zlib.decompress(ours) == data  # wbits=15 (zlib header + adler32)
    assert codec("deflate").decompress(zlib.compress(data, 9), None) == data
    raw = zlib.compressobj(wbits=-15)
    raw_deflate = raw.compress(data) + raw.flush()
    with pytest.raises(ProtocolError):
        codec("deflate").decompress(raw_deflate, None)
    with pytest.raises(ProtocolError):  # a gzip body labelled deflate is rejected too
        codec("deflate").decompress(gzip.compress(data), None)


def test_bzip2_interoperates_with_stdlib() -> None:
    data = PAYLOADS["small"] * 100
    assert bz2.decompress(codec("bzip2").compress(data)) == data
    assert codec("bzip2").decompress(bz2.compress(data), None) == data


# --------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zeros = bytes(100 * MiB)
    out = {name: codec(name).compress(zeros) for name in COMPRESSING}
    for name, blob in out.items():
        assert len(blob) < MiB, name  # a real bomb: tiny on the wire
    return out


@pytest.mark.parametrize("name", COMPRESSING)
def test_bomb_rejected_early(name: str, bombs: dict[str, bytes]) -> None:
    limit = 4 * MiB
    with pytest.raises(MessageTooLargeError) as info:
        codec(name).decompress(bombs[name], limit)
    err = info.value
    assert err.code == StatusCode.RESOURCE_EXHAUSTED
    assert err.details.startswith("Received decompressed message larger than max (")
    assert err.details.endswith(f" vs. {limit})")
    produced = int(err.details.split("(")[1].split(" ")[0])
    assert limit < produced < 100 * MiB // 4  # stopped long before inflating 100 MiB


@pytest.mark.parametrize("name", SUPPORTED)
def test_exact_limit(name: str) -> None:
    c = codec(name)
    limit = 64 * 1024
    exact = b"z" * limit
    assert c.decompress(c.compress(exact), limit) == exact
    with pytest.raises(MessageTooLargeError) as info:
        c.decompress(c.compress(exact + b"z"), limit)
    assert info.value.code == StatusCode.RESOURCE_EXHAUSTED
    assert c.decompress(c.compress(b""), 0) == b""


@pytest.mark.parametrize("name", COMPRESSING)
def test_corrupt_truncated_and_trailing(name: str) -> None:
    c = codec(name)
    good = c.compress(PAYLOADS["compressible_1MiB"][:100_000])
    cases = {
        "garbage": b"this is not compressed data at all" * 3,
        "truncated": good[: len(good) // 2],
        "truncated_end": good[:-1],
        "trailing": good + b"\x00junk",
    }
    for label, blob in cases.items():
        with pytest.raises(ProtocolError) as info:
            c.decompress(blob, 4 * MiB)
        err = info.value
        assert err.code == StatusCode.INTERNAL, label
        assert err.details.startswith(f"could not decompress {name} message: "), label


def test_flipped_checksum_is_internal() -> None:
    good = bytearray(codec("gzip").compress(b"payload" * 100))
    good[-5] ^= 0xFF  # inside the CRC32 trailer
    with pytest.raises(ProtocolError) as info:
        codec("gzip").decompress(bytes(good), None)
    assert info.value.code == StatusCode.INTERNAL


def test_identity_limit() -> None:
    assert IDENTITY.decompress(b"abc", 3) == b"abc"
    with pytest.raises(MessageTooLargeError):
        IDENTITY.decompress(b"abcd", 3)
    assert IDENTITY.compress(b"abc") == b"abc"


# --------------------------------------------------------------------------- negotiation


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding("identity,deflate,gzip") == ["identity", "deflate", "gzip"]
    assert parse_accept_encoding("gzip, deflate") == ["gzip", "deflate"]
    assert parse_accept_encoding(b" GZIP ,, Deflate,") == ["gzip", "deflate"]
    assert parse_accept_encoding("") == []
    assert parse_accept_encoding(None) == []


def test_choose_response_encoding() -> None:
    grpcio_accepts = "identity,deflate,gzip"
    assert choose_response_encoding("gzip", grpcio_accepts) == "gzip"
    assert choose_response_encoding(" GZIP", b"gzip, deflate") == "gzip"
    assert choose_response_encoding("deflate", "gzip, deflate") == "deflate"
    assert choose_response_encoding("bzip2", grpcio_accepts) is None  # client didn't list it
    assert choose_response_encoding("bzip2", "identity,bzip2") == "bzip2"
    assert choose_response_encoding("gzip", None) is None  # nothing advertised
    assert choose_response_encoding("gzip", "") is None
    assert choose_response_encoding("snappy", "snappy,gzip") is None  # we can't make it
    assert choose_response_encoding("identity", grpcio_accepts) is None
    assert choose_response_encoding(None, grpcio_accepts) is None


def test_compress_message() -> None:
    text = PAYLOADS["compressible_1MiB"]
    flag, body = compress_message(codec("gzip"), text)
    assert flag is True and len(body) < len(text)
    assert codec("gzip").decompress(body, None) == text
    for name in COMPRESSING:
        assert compress_message(codec(name), _RANDOM) == (False, _RANDOM)
        assert compress_message(codec(name), b"ab") == (False, b"ab")
        assert compress_message(codec(name), b"") == (False, b"")
    assert compress_message(None, text) == (False, text)
    assert compress_message(IDENTITY, text) == (False, text)


def test_unsupported_encoding_error() -> None:
    err = unsupported_encoding_error("snappy")
    assert isinstance(err, RpcError)
    assert err.code == StatusCode.UNIMPLEMENTED
    assert "snappy" in err.details
    assert err.details.endswith(f"supported: {accept_encoding_header()}")


# --------------------------------------------------------------------------- grpcio interop
#
# A raw HTTP/2 client (h2 package) talks to a real grpcio server: our compressed request
# bytes must be accepted by grpc core's decompressor, and grpc core's compressed response
# bytes (server default compression) must be decoded by ours. Framing is done here, not by
# dubbo's client, so this tests only the codec bytes on the wire.

SERVICE = "test.compression.Echo"
RESPONSE_TAIL = bytes(range(256)) * 256  # 64 KiB, compressible


def _handler(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request[:64] + RESPONSE_TAIL


@pytest.fixture(params=["gzip", "deflate"])
def grpcio_server(request: pytest.FixtureRequest):
    algorithm = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
    server = grpc.server(ThreadPoolExecutor(max_workers=2), compression=algorithm[request.param])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(_handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield request.param, port
    finally:
        server.stop(None).wait(5)


def _raw_call(port: int, body: bytes, headers: list[tuple[str, str]]):
    """One unary call; returns (response headers, response DATA bytes, trailers)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    resp_headers: dict[str, str] = {}
    trailers: dict[str, str] = {}
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [
            (":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/Call"),
            (":authority", f"127.0.0.1:{port}"), ("te", "trailers"),
            ("content-type", "application/grpc"), *headers,
        ])
        step = conn.max_outbound_frame_size
        for i in range(0, len(body), step):
            conn.send_data(sid, body[i : i + step])
        conn.end_stream(sid)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    resp_headers = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = dict(event.headers)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    return resp_headers, bytes(data), trailers


@pytest.mark.timeout(30)
def test_grpcio_wire_interop(grpcio_server) -> None:
    name, port = grpcio_server
    c = codec(name)
    request = b"ping from dubbo " * 1024
    flag, body = compress_message(c, request)
    assert flag
    headers, data, trailers = _raw_call(port, encode_message(body, True), [
        ("grpc-encoding", name), ("grpc-accept-encoding", accept_encoding_header()),
    ])
    status = trailers.get("grpc-status", headers.get("grpc-status"))
    assert status == "0", (headers, trailers)
    # grpcio compressed its reply with the server's algorithm, which we advertised.
    assert headers.get("grpc-encoding") == name
    assert choose_response_encoding(name, headers.get("grpc-accept-encoding")) == name
    resp_flag, length = struct.unpack(">BI", data[:5])
    assert resp_flag == 1 and length == len(data) - 5
    assert c.decompress(data[5:], 4 * MiB) == request[:64] + RESPONSE_TAIL


@pytest.mark.timeout(30)
def test_grpcio_rejects_unknown_request_encoding(grpcio_server) -> None:
    # compression.md says UNIMPLEMENTED plus grpc-accept-encoding, which is what
    # unsupported_encoding_error() gives us. grpcio 1.85 instead fails at HPACK parse
    # time: INTERNAL "Error parsing 'grpc-encoding' metadata", without an accept list.
    _name, port = grpcio_server
    headers, _data, trailers = _raw_call(port, encode_message(b"\x00\x01\x02", True), [
        ("grpc-encoding", "snappy"), ("grpc-accept-encoding", accept_encoding_header()),
    ])
    status = trailers.get("grpc-status", headers.get("grpc-status"))
    assert status in {str(int(StatusCode.UNIMPLEMENTED)), str(int(StatusCode.INTERNAL))}, (
        headers, trailers)
