"""Per-message compression codecs and ``grpc-encoding`` negotiation (sans-I/O).

Rules followed (grpc ``doc/compression.md`` and ``PROTOCOL-HTTP2.md``):

* Compression is per message: a Compressed-Flag of 1 means the message body was
  compressed, on its own, with the stream's ``grpc-encoding``.
* A request whose ``grpc-encoding`` the server does not support fails with
  ``UNIMPLEMENTED`` and the server lists what it accepts in ``grpc-accept-encoding``
  (:func:`unsupported_encoding_error`, :func:`accept_encoding_header`).
* A server must not compress with an algorithm absent from the client's
  ``grpc-accept-encoding`` (:func:`choose_response_encoding`); either side may always
  send a message uncompressed.
* Like grpc core (``src/core/lib/compression/message_compress.cc``: ``zlib_compress``
  keeps the result only if ``output->length < input->length``), a message is
  compressed only when that makes it smaller (:func:`compress_message`).

Wire formats: ``gzip`` is the gzip container (zlib ``wbits=31``); ``deflate`` is the
zlib-wrapped stream (RFC 1950, ``wbits=15``), *not* raw deflate. grpc core uses
``deflateInit2(..., 15 | (gzip ? 16 : 0), ...)`` for both directions, grpc-java's
``Codec.Deflate`` uses ``java.util.zip.DeflaterOutputStream`` (zlib wrapper) and
grpc-js uses ``zlib.deflate``. ``bzip2`` is supported because Java Triple registers
it; ``zstd`` only when ``compression.zstd`` (Python 3.14+) or the ``zstandard``
package can be imported. Java also registers ``snappy``; it is not supported here.

Our ``grpc-accept-encoding`` value has no spaces after the commas: grpc-js splits the
header on ``','`` without trimming, so ``"gzip, deflate"`` would read as ``" deflate"``
there. Parsing here trims and lower-cases.

Decompression is bomb-safe: output is produced in 32 KiB pieces, at most
``max_size + 1`` bytes in all, so an oversize message fails with ``RESOURCE_EXHAUSTED``
having held no more than the limit plus one piece (one capped call would hold twice
the limit: CPython copies its output blocks into the result). Corrupt, truncated or
trailing-garbage input fails with ``INTERNAL``. An empty compressed body decodes to an
empty message, as in grpc core ("Do not fail on an empty input").
"""

from __future__ import annotations

import bz2
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..status import MessageTooLargeError, ProtocolError, RpcError, StatusCode

__all__ = [
    "Codec",
    "IDENTITY",
    "SUPPORTED",
    "get_codec",
    "accept_encoding_header",
    "parse_accept_encoding",
    "choose_response_encoding",
    "compress_message",
    "unsupported_encoding_error",
]


@dataclass(frozen=True, slots=True)
class Codec:
    """One message compression algorithm, named as in ``grpc-encoding``.

    ``decompress(data, max_size)`` raises ``MessageTooLargeError`` when the output
    would exceed ``max_size`` bytes (``None``: unlimited) and ``ProtocolError`` when
    ``data`` is not a complete, valid stream.
    """

    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int | None], bytes]

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"


def _too_large(produced: int, max_size: int) -> MessageTooLargeError:
    return MessageTooLargeError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"Received decompressed message larger than max ({produced} vs. {max_size})",
    )


def _corrupt(name: str, reason: object) -> ProtocolError:
    return ProtocolError(StatusCode.INTERNAL, f"could not decompress {name} message: {reason}")


# Each piece fits CPython's first output block (32 KiB), so it is made without a copy.
_PIECE = 32 * 1024


def _piece_size(total: int, max_size: int | None) -> int:
    """How much output to ask for next: a piece, or one byte past the limit (never 0,
    which zlib reads as "unlimited")."""
    return _PIECE if max_size is None else min(_PIECE, max_size + 1 - total)


def _finish(name: str, out: bytes, max_size: int | None, eof: bool, unused: bytes) -> bytes:
    """Common checks once a one-shot, length-capped decompress call has returned."""
    if max_size is not None and len(out) > max_size:
        # The cap was max_size + 1, so this is "at least" the real size.
        raise _too_large(len(out), max_size)
    if not eof:
        raise _corrupt(name, "truncated stream")
    if unused:
        raise _corrupt(name, f"{len(unused)} bytes of trailing data after the stream")
    return out


# --------------------------------------------------------------------------- identity


def _identity_compress(data: bytes) -> bytes:
    return bytes(data)


def _identity_decompress(data: bytes, max_size: int | None) -> bytes:
    if max_size is not None and len(data) > max_size:
        raise _too_large(len(data), max_size)
    return bytes(data)


# --------------------------------------------------------------------------- zlib family


def _zlib_codec(name: str, wbits: int) -> Codec:
    def compress(data: bytes) -> bytes:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, wbits)
        return c.compress(data) + c.flush()

    def decompress(data: bytes, max_size: int | None) -> bytes:
        if not data:
            return b""
        d = zlib.decompressobj(wbits)
        pieces: list[bytes] = []
        total = 0
        try:
            while True:
                want = _piece_size(total, max_size)
                out = d.decompress(data, want)
                pieces.append(out)
                total += len(out)
                if max_size is not None and total > max_size:
                    raise _too_large(total, max_size)
                data = d.unconsumed_tail
                # A full piece may leave output pending inside zlib even with no input.
                if d.eof or (not data and len(out) < want):
                    break
        except zlib.error as exc:
            raise _corrupt(name, exc) from None
        return _finish(name, b"".join(pieces), max_size, d.eof, d.unused_data)

    return Codec(name, compress, decompress)


# --------------------------------------------------------------------------- bzip2


def _bz2_compress(data: bytes) -> bytes:
    return bz2.compress(data)


def _decompress_in_pieces(name: str, d: Any, data: bytes, max_size: int | None,
                          errors: tuple[type[BaseException], ...]) -> bytes:
    """Run a bz2-style decompressor (``decompress(data, max_length)``, ``needs_input``,
    ``eof``, ``unused_data``: bz2 and the stdlib's zstd) piece by piece."""
    pieces: list[bytes] = []
    total = 0
    try:
        while True:
            out = d.decompress(data, _piece_size(total, max_size))
            data = b""  # the decompressor keeps what it has not used yet
            pieces.append(out)
            total += len(out)
            if max_size is not None and total > max_size:
                raise _too_large(total, max_size)
            if d.eof or d.needs_input:
                break
    except errors as exc:
        raise _corrupt(name, exc) from None
    return _finish(name, b"".join(pieces), max_size, d.eof, d.unused_data)


def _bz2_decompress(data: bytes, max_size: int | None) -> bytes:
    if not data:
        return b""
    return _decompress_in_pieces("bzip2", bz2.BZ2Decompressor(), data, max_size,
                                 (OSError, ValueError, EOFError))


# --------------------------------------------------------------------------- zstd (optional)


def _zstd_codec() -> Codec | None:
    std_zstd = None
    if sys.version_info >= (3, 14):
        # The stdlib's same-API decompressor (max_length, eof, unused_data). Only
        # asked for on 3.14+: earlier, "compression" could be a user's own script.
        try:
            from compression import zstd as std_zstd  # type: ignore[import-not-found]
        except Exception:
            std_zstd = None
    if std_zstd is not None:
        def compress(data: bytes) -> bytes:
            return std_zstd.compress(data)

        def decompress(data: bytes, max_size: int | None) -> bytes:
            if not data:
                return b""
            return _decompress_in_pieces("zstd", std_zstd.ZstdDecompressor(), data, max_size,
                                         (std_zstd.ZstdError, ValueError, EOFError))

        return Codec("zstd", compress, decompress)

    try:
        import zstandard  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return None
    return _zstandard_codec(zstandard)


# A zstd block holds at most 128 KiB and the smallest block (RLE) costs 4 input bytes,
# so one input byte can expand to at most ~32 KiB. ``zstandard``'s decompressobj has no
# output cap, so input is fed in slices sized to keep the overshoot near the budget.
_ZSTD_MAX_RATIO = 32 * 1024
_ZSTD_MIN_SLICE = 64


def _zstandard_codec(zstandard: Any) -> Codec:
    cctx = zstandard.ZstdCompressor()
    dctx = zstandard.ZstdDecompressor()

    def compress(data: bytes) -> bytes:
        out: bytes = cctx.compress(data)
        return out

    def decompress(data: bytes, max_size: int | None) -> bytes:
        if not data:
            return b""
        d = dctx.decompressobj()
        view = memoryview(data)
        try:
            if max_size is None:
                return _finish("zstd", d.decompress(data), None, d.eof, d.unused_data)
            chunks: list[bytes] = []
            total = pos = 0
            while pos < len(view) and not d.eof:
                step = max(_ZSTD_MIN_SLICE, (max_size + 1 - total) // _ZSTD_MAX_RATIO)
                out = d.decompress(view[pos : pos + step])
                pos += step
                total += len(out)
                if total > max_size:
                    raise _too_large(total, max_size)
                chunks.append(out)
        except zstandard.ZstdError as exc:
            raise _corrupt("zstd", exc) from None
        unused = d.unused_data + bytes(view[pos:]) if d.eof else b""
        return _finish("zstd", b"".join(chunks), max_size, d.eof, unused)

    return Codec("zstd", compress, decompress)


# --------------------------------------------------------------------------- registry

IDENTITY = Codec("identity", _identity_compress, _identity_decompress)

_CODECS: dict[str, Codec] = {
    "identity": IDENTITY,
    "deflate": _zlib_codec("deflate", 15),
    "gzip": _zlib_codec("gzip", 31),
    "bzip2": Codec("bzip2", _bz2_compress, _bz2_decompress),
}
_zstd = _zstd_codec()
if _zstd is not None:
    _CODECS["zstd"] = _zstd
del _zstd

SUPPORTED: tuple[str, ...] = tuple(_CODECS)
_ACCEPT_HEADER = ",".join(SUPPORTED)


def codec_name(name: Any) -> str | None:
    """A codec name from a string, ``None``, or grpcio's ``grpc.Compression`` enum
    (NoCompression 0, Deflate 1, Gzip 2), so grpcio-style code ports unchanged."""
    if name is None or isinstance(name, str):
        return name
    return {0: None, 1: "deflate", 2: "gzip"}[int(getattr(name, "value", name))]


def resolve(name: Any) -> Codec | None:
    """The codec a user asked for by name (or grpcio's enum); ``None`` for no
    compression. ``ValueError`` naming what we support for an unknown name, so a
    misspelt option fails where it is set, not on the first call."""
    name = codec_name(name)
    if name is None or name == "identity":
        return None
    codec = get_codec(name)
    if codec is None:
        raise ValueError(f"unsupported compression {name!r}; "
                         f"supported: {accept_encoding_header()}")
    return codec


def get_codec(name: str) -> Codec | None:
    """The codec for a ``grpc-encoding`` value (case-insensitive, trimmed), or None."""
    return _CODECS.get(name.strip().lower())


def accept_encoding_header() -> str:
    """Our ``grpc-accept-encoding`` value: comma-joined, no spaces, identity first."""
    return _ACCEPT_HEADER


def parse_accept_encoding(value: str | bytes | None) -> list[str]:
    """Split a ``grpc-accept-encoding`` value: trimmed, lower-cased, empties dropped."""
    if value is None:
        return []
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    return [part for part in (p.strip().lower() for p in value.split(",")) if part]


def choose_response_encoding(
    preferred: str | None, client_accepts: str | bytes | None
) -> str | None:
    """The encoding a server may use for replies, or None for uncompressed.

    ``preferred`` is used only if we support it and the client listed it in its
    ``grpc-accept-encoding`` (compression.md: a server must not compress with an
    algorithm the client did not advertise). ``identity`` means no compression.
    """
    if preferred is None:
        return None
    codec = get_codec(preferred)
    if codec is None or codec is IDENTITY:
        return None
    return codec.name if codec.name in parse_accept_encoding(client_accepts) else None


def compress_message(codec: Codec | None, payload: bytes) -> tuple[bool, bytes]:
    """``(compressed_flag, body)`` for one message.

    Compresses only when the result is strictly smaller than ``payload`` (grpc core's
    rule); otherwise the message goes out uncompressed with flag 0.
    """
    if codec is None or codec is IDENTITY or not payload:
        return False, payload
    compressed = codec.compress(payload)
    if len(compressed) < len(payload):
        return True, compressed
    return False, payload


def unsupported_encoding_error(name: str) -> RpcError:
    """The UNIMPLEMENTED error for a request ``grpc-encoding`` we cannot decode.

    The caller should also send ``grpc-accept-encoding: accept_encoding_header()``.
    """
    return RpcError(
        StatusCode.UNIMPLEMENTED,
        f"grpc-encoding '{name}' is not supported; supported: {_ACCEPT_HEADER}",
    )
