"""What servers, clients and the orchestrator agree on: names, payloads, counts."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# floor: the minimal h2 echo of floor.py; dubbo-procs2: dubbo's server with processes=2
# (only where dubbo.Server accepts ``processes``), called by dubbo's client.
SYSTEMS = ("dubbo", "grpcio", "grpclib", "floor", "dubbo-procs2")
SERVICE = "bench.Bench"  # raw-bytes methods
PB_SERVICE = "bench.PbBench"  # protobuf methods (messages.py)
METHODS = ("Echo", "ServerStream", "ClientStream", "PingPong", "Hold")
PB_METHODS = ("Echo", "ServerStream", "ClientStream", "PingPong", "BlobEcho")

# Protobuf scenarios first: they are what users run. The raw-bytes ones measure the
# transport alone.
PB_SCENARIOS = ("pb_unary_latency", "pb_unary_throughput", "pb_unary_connections",
                "pb_server_stream", "pb_client_stream", "pb_ping_pong", "pb_large_unary")
RAW_SCENARIOS = ("unary_latency", "unary_throughput", "server_stream", "client_stream",
                 "ping_pong", "large_unary", "connect", "idle_streams")
SCENARIOS = PB_SCENARIOS + RAW_SCENARIOS
# What the systems with a partial repertoire measure; the others measure every scenario.
FLOOR_SCENARIOS = frozenset({"pb_unary_latency", "pb_unary_throughput", "pb_ping_pong",
                             "pb_large_unary", "unary_latency", "unary_throughput",
                             "ping_pong", "large_unary", "connect"})
PROCS_SCENARIOS = frozenset({"pb_unary_throughput", "pb_unary_connections"})
PROCS = 2  # serving processes of dubbo-procs2


def supports(system: str, scenario: str) -> bool:
    if system == "floor":
        return scenario in FLOOR_SCENARIOS
    if system == "dubbo-procs2":
        return scenario in PROCS_SCENARIOS
    return True


def is_protobuf(scenario: str) -> bool:
    return scenario.startswith("pb_")


def base_scenario(scenario: str) -> str:
    """The scenario's shape: ``pb_unary_latency`` -> ``unary_latency``."""
    return scenario[3:] if is_protobuf(scenario) else scenario

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


def path(method: str, service: str = SERVICE) -> str:
    return f"/{service}/{method}"


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
    throughput_calls_per_caller: int = 500
    stream_messages: int = 100_000
    ping_pongs: int = 10_000
    large_calls: int = 100  # enough samples for its p99 to be other than the maximum
    connects: int = 200
    idle_streams: int = 1_000

    def scaled(self, divisor: int) -> Counts:
        return Counts(*(max(1, value // divisor) for value in (
            self.warmup, self.unary_calls, self.throughput_calls_per_caller,
            self.stream_messages, self.ping_pongs, self.large_calls, self.connects,
            self.idle_streams)))
