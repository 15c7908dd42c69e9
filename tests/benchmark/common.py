"""What servers, clients and the orchestrator agree on: names, payloads, counts."""

from __future__ import annotations

import struct
from dataclasses import dataclass

SYSTEMS = ("dubbo", "grpcio", "grpclib")
SERVICE = "bench.Bench"
METHODS = ("Echo", "ServerStream", "ClientStream", "PingPong", "Hold")

PAYLOAD_SIZE = 100
PAYLOAD = bytes(range(PAYLOAD_SIZE))
LARGE_SIZE = 4 * 1024 * 1024
# Above the 4 MiB payload (plus its 5-byte prefix) for every system, so no default
# limit (grpcio's and dubbo's are 4 MiB) decides the large-unary scenario.
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
THROUGHPUT_CALLERS = 16
HOLD_ACK = b"held"

# Streams one connection may carry, per system, in the idle-streams scenario: dubbo's
# and grpcio's servers are configured for 2,000; grpclib's server keeps h2's default
# SETTINGS_MAX_CONCURRENT_STREAMS of 100 and has no option to raise it.
STREAMS_PER_CONNECTION = {"dubbo": 2000, "grpcio": 2000, "grpclib": 100}

_STREAM_REQUEST = struct.Struct(">QI")  # ServerStream request: count, size
_COUNT = struct.Struct(">Q")  # ClientStream reply: requests counted


def path(method: str) -> str:
    return f"/{SERVICE}/{method}"


def stream_request(count: int, size: int) -> bytes:
    return _STREAM_REQUEST.pack(count, size)


def parse_stream_request(data: bytes) -> tuple[int, int]:
    count, size = _STREAM_REQUEST.unpack(data)
    return count, size


def encode_count(count: int) -> bytes:
    return _COUNT.pack(count)


def decode_count(data: bytes) -> int:
    (count,) = _COUNT.unpack(data)
    return int(count)


@dataclass(frozen=True)
class Counts:
    """How much work each scenario does; ``--quick`` divides the full counts by 10."""

    warmup: int = 200
    unary_calls: int = 5_000
    throughput_calls_per_caller: int = 1_000
    stream_messages: int = 100_000
    ping_pongs: int = 10_000
    large_calls: int = 200  # enough samples for its p99 to be more than the maximum
    connects: int = 200
    idle_streams: int = 1_000

    def scaled(self, divisor: int) -> Counts:
        return Counts(*(max(1, value // divisor) for value in (
            self.warmup, self.unary_calls, self.throughput_calls_per_caller,
            self.stream_messages, self.ping_pongs, self.large_calls, self.connects,
            self.idle_streams)))
