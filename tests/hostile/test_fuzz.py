"""Frame-level fuzz of a live dubbo server (issue 7, "Fuzzing").

A dubbo server runs in a subprocess (this file run as a script). Fuzzer threads open
connection after connection and send seeded-random HTTP/2: valid traffic made with h2,
well-formed requests mixed with random frames (any type, flags, stream id, payload and
declared length), random header blocks, raw bytes with or without the preface, and
mutated copies of valid byte streams; sent whole or dribbled, read or never read,
closed, reset or left open for a while. Meanwhile a grpcio probe makes one unary call
on a fresh connection every 0.25 s with a 1 s deadline.

What must hold: the server never crashes or logs a traceback; the probe is answered
during the fuzz (at most one miss in ten) and always afterwards; once the fuzzer has
gone, the server's sockets and threads go back to their baseline and its memory to
within 64 MiB of it (and never more than 200 MiB above it meanwhile).

``DUBBO_FUZZ_SECONDS`` sets how long the fuzz runs (default 25; ``tox -e fuzz`` runs
600); ``DUBBO_FUZZ_SEED`` replays a run's random choices (timing still varies). The
seed is printed at the start and in every failure message, with the case seed of
each of the last connections; ``DUBBO_FUZZ_CASE=<case seed>`` sends that one
connection's bytes over and over.
"""

from __future__ import annotations

import collections
import functools
import gzip
import json
import os
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

SERVICE = "test.Fuzz"
FUZZ_SECONDS = float(os.environ.get("DUBBO_FUZZ_SECONDS", "25"))
# Every connection replays this one case seed (from a failure report) instead.
REPLAY_CASE = int(os.environ["DUBBO_FUZZ_CASE"]) if os.environ.get("DUBBO_FUZZ_CASE") else None
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MiB = 1024 * 1024

PROBE_EVERY = 0.25  # seconds between probe calls during the fuzz
PROBE_DEADLINE = 1.0  # each probe must be answered within this
MAX_PROBE_MISSES = 0.1  # share of probes that may miss during the fuzz
SETTLE_SECONDS = 10.0  # after the fuzz: time for sockets, threads and memory to return
RSS_PEAK_GROWTH = 200 * MiB
RSS_END_GROWTH = 64 * MiB
WORKER_IDLE_TIMEOUT = 1.0  # passed to servers that retire idle workers (limits-api.md)

FUZZ_THREADS = 2
MAX_LINGERING = 16  # connections left open (idle or half-sent) at any time
CASE_SECONDS = 1.0  # the most one connection's sending takes
CASE_BYTES = 512 * 1024  # the most one connection sends (before dribbling)


# --------------------------------------------------------------------------- the server


def _serve() -> None:
    """Subprocess entry point: serve test.Fuzz on a free port, print it, and stop when
    stdin closes (the test ended or died)."""
    import inspect
    import logging

    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s %(threadName)s: %(message)s")

    def echo(request: bytes) -> bytes:
        return request

    def stats(request: bytes) -> bytes:
        names = [t.name for t in threading.enumerate()]
        return json.dumps({"threads": names}).encode()

    def many(request: bytes) -> Iterator[bytes]:
        for i in range(min(len(request), 50)):
            yield bytes([i]) * i

    def count(requests: Iterator[bytes]) -> bytes:
        return str(sum(1 for _ in requests)).encode()

    def chat(requests: Iterator[bytes]) -> Iterator[bytes]:
        yield from requests

    def slow(request: bytes, context: Any) -> bytes:
        end = time.monotonic() + min(len(request), 20) / 100
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.01)
        return request

    def fail(request: bytes) -> bytes:
        raise dubbo.RpcError(dubbo.StatusCode.INVALID_ARGUMENT, "fuzz says no")

    handlers = [
        RpcMethodHandler.unary(echo), RpcMethodHandler.unary(stats),
        RpcMethodHandler.server_stream(many), RpcMethodHandler.client_stream(count),
        RpcMethodHandler.bi_stream(chat), RpcMethodHandler.unary(slow),
        RpcMethodHandler.unary(fail),
    ]
    config = ServiceConfig(RpcServiceHandler(SERVICE, handlers), host="127.0.0.1", port=0)
    options: dict[str, Any] = {}
    if "worker_idle_timeout" in inspect.signature(dubbo.Server).parameters:
        options["worker_idle_timeout"] = WORKER_IDLE_TIMEOUT
    server = dubbo.Server(config, **options).start()
    print(f"PORT {server.port} RETIRES {int(bool(options))}", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop(grace=1)


def _proc_status(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        text = status.read()
    fields = {}
    for name in ("VmRSS", "VmHWM", "Threads"):
        match = re.search(rf"^{name}:\s+(\d+)", text, re.MULTILINE)
        assert match is not None, f"no {name} in /proc/{pid}/status"
        fields[name] = int(match.group(1)) * (1024 if name.startswith("Vm") else 1)
    return fields


def _socket_count(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    retires_workers: bool
    log_path: str

    def status(self) -> dict[str, int]:
        return _proc_status(self.process.pid)

    def sockets(self) -> int:
        return _socket_count(self.process.pid)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()


@pytest.fixture
def fuzzed_server(tmp_path) -> Iterator[ServerProcess]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    log_path = str(tmp_path / "server.log")
    out_path = tmp_path / "server.out"
    with open(log_path, "wb") as log, open(out_path, "wb") as out:
        process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"],
                                   stdin=subprocess.PIPE, stdout=out, stderr=log, env=env,
                                   cwd=root)
    try:
        deadline = time.monotonic() + 20
        match = None
        while match is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
            match = re.search(rb"PORT (\d+) RETIRES (\d)", out_path.read_bytes())
        assert match is not None, f"server did not start: {open(log_path).read()[-2000:]}"
        server = ServerProcess(process, int(match.group(1)), match.group(2) == b"1", log_path)
        yield server
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
            pytest.fail("the fuzzed server did not stop within 15 s of being asked")
        if process.returncode != 0:
            pytest.fail(f"the fuzzed server exited with {process.returncode}: "
                        f"{open(log_path, errors='replace').read()[-2000:]}")


# --------------------------------------------------------------------------- probing


def _grpc_call(port: int, method: str, request: bytes, timeout: float) -> bytes:
    """One unary call on a fresh grpcio connection (a local subchannel pool: grpcio
    would otherwise reuse a connection another channel made)."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                    options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        return channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=timeout)
    finally:
        channel.close()


def probe(port: int) -> str | None:
    """None if a fresh connection's unary call is answered in time, else why not."""
    started = time.monotonic()
    try:
        reply = _grpc_call(port, "echo", b"probe", PROBE_DEADLINE)
    except Exception as exc:  # grpc.RpcError and anything else: a miss
        return f"{type(exc).__name__}: {getattr(exc, 'code', lambda: '')()} " \
               f"after {time.monotonic() - started:.2f}s"
    if reply != b"probe":
        return f"wrong reply {reply!r:.60}"
    return None


def server_threads(port: int) -> list[str]:
    return json.loads(_grpc_call(port, "stats", b"", 5.0))["threads"]


def split_threads(names: list[str]) -> tuple[list[str], int]:
    """(names of threads that are not workers, number of workers)."""
    workers = [n for n in names if n.startswith("dubbo-worker")]
    return sorted(n for n in names if not n.startswith("dubbo-worker")), len(workers)


# --------------------------------------------------------------------------- generators


FRAME_TYPES = {"DATA": 0, "HEADERS": 1, "PRIORITY": 2, "RST_STREAM": 3, "SETTINGS": 4,
               "PUSH_PROMISE": 5, "PING": 6, "GOAWAY": 7, "WINDOW_UPDATE": 8,
               "CONTINUATION": 9}
METHODS = ["echo", "many", "count", "chat", "slow", "fail", "stats", "nope"]


def frame(ftype: int, flags: int, stream_id: int, payload: bytes,
          length: int | None = None) -> bytes:
    """One frame, its header declaring ``length`` (default: the payload's)."""
    declared = len(payload) if length is None else length
    return struct.pack(">I", declared)[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0xFFFFFFFF) + payload


@functools.cache
def gzip_zeros(size: int) -> bytes:
    return gzip.compress(bytes(size))


def grpc_message(rng: random.Random) -> bytes:
    """A length-prefixed message, sometimes compressed, sometimes lying."""
    body = rng.randbytes(rng.choice([0, 1, 5, 100, 1000, 20000]))
    flag = 0
    roll = rng.random()
    if roll < 0.15:
        flag, body = 1, gzip.compress(body)
    elif roll < 0.2:
        flag, body = 1, gzip_zeros(rng.choice([MiB, 8 * MiB]))  # a small bomb
    elif roll < 0.25:
        flag = rng.choice([1, 2, 255])  # compressed garbage, or a bad flag
    length = len(body)
    if rng.random() < 0.1:
        length = rng.choice([0, length + 1, max(0, length - 1), 2**32 - 1, 5 * MiB])
    return bytes([flag]) + struct.pack(">I", length) + body


def header_list(rng: random.Random, port: int) -> list[tuple[bytes, bytes]]:
    """A request head: usually valid, often with something wrong or odd in it."""
    method = rng.choice(METHODS)
    headers = [(b":method", b"POST"), (b":scheme", b"http"),
               (b":path", f"/{SERVICE}/{method}".encode()),
               (b":authority", f"127.0.0.1:{port}".encode()),
               (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    for _ in range(rng.choice([0, 0, 1, 3])):
        roll = rng.random()
        if roll < 0.2:
            headers.append((b"grpc-timeout", rng.choice(
                [b"1S", b"100m", b"99999999H", b"0n", b"1", b"-1S", b"123456789S", b"5x",
                 b"", b"2000000H", str(rng.randrange(10**8)).encode() + b"u"])))
        elif roll < 0.35:
            headers.append((b"grpc-encoding", rng.choice(
                [b"gzip", b"identity", b"deflate", b"bzip2", b"snappy", b"", b"\xff"])))
        elif roll < 0.5:
            index = rng.randrange(len(headers))
            name, _ = headers[index]
            headers[index] = (name, rng.choice([b"", b"GET", b"/", b"x" * 300,
                                                rng.randbytes(8), b"application/json"]))
        elif roll < 0.6:
            del headers[rng.randrange(len(headers))]
        elif roll < 0.7:
            headers.insert(rng.randrange(len(headers) + 1),
                           rng.choice(headers) if headers else (b":path", b"/"))
        elif roll < 0.8:
            headers.append((rng.choice([b"x-meta", b"x-bin", b"a-bin", b"Upper",
                                        b"connection", b":bogus", b"", b"grpc-status"]),
                            rng.randbytes(rng.choice([0, 3, 100, 9000]))))
        elif roll < 0.85:
            headers.append((b"x-big", b"v" * rng.choice([16 * 1024, 70 * 1024])))
        else:
            rng.shuffle(headers)
    return headers


class Encoder:
    """An HPACK encoder whose dynamic table follows what the server has decoded, as
    long as the blocks arrive whole and in order (when they do not, that is fuzz too)."""

    def __init__(self) -> None:
        import hpack

        self.encoder = hpack.Encoder()

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        # hpack's Huffman coder is pure Python: slow on large values, so skip it there.
        small = sum(len(k) + len(v) for k, v in headers) < 4096
        return self.encoder.encode(headers, huffman=small)


def stream_id_for(rng: random.Random, state: dict[str, int]) -> int:
    roll = rng.random()
    if roll < 0.5:
        state["next"] += 2
        return state["next"]
    if roll < 0.75:
        return max(1, state["next"])  # the stream opened last
    return rng.choice([0, 2, 4, 1, 3, 2**31 - 1, 2**31 + 1, rng.randrange(2**31)])


def random_frame(rng: random.Random, state: dict[str, int], enc: Encoder, port: int) -> bytes:
    """One frame of any type, well or badly formed."""
    name = rng.choice([*FRAME_TYPES, "UNKNOWN"])
    sid = stream_id_for(rng, state)
    flags = rng.randrange(256) if rng.random() < 0.2 else 0
    if name == "DATA":
        payload = grpc_message(rng)
        flags |= rng.choice([0, 1])
        if rng.random() < 0.1:
            pad = rng.randrange(256)
            flags |= 0x8
            payload = bytes([pad]) + payload + bytes(rng.choice([pad, pad // 2]))
    elif name in ("HEADERS", "CONTINUATION", "PUSH_PROMISE"):
        block = enc.encode(header_list(rng, port)) if rng.random() < 0.7 \
            else rng.randbytes(rng.randrange(64))
        flags |= rng.choice([0x4, 0x4, 0x5, 0x0, 0x1])
        payload = block
        if name == "PUSH_PROMISE":
            payload = struct.pack(">I", rng.randrange(2**31)) + block
        elif name == "HEADERS" and rng.random() < 0.1:
            flags |= 0x20
            payload = struct.pack(">IB", rng.choice([0, sid, 1]), rng.randrange(256)) + block
    elif name == "PRIORITY":
        payload = struct.pack(">IB", rng.choice([0, sid, sid + 2, 2**31 | sid]),
                              rng.randrange(256))[: rng.choice([5, 5, 5, 4, 6])]
    elif name == "RST_STREAM":
        payload = struct.pack(">I", rng.choice([0, 1, 2, 7, 8, 0xB, 0xFFFFFFFF]))
    elif name == "SETTINGS":
        flags = rng.choice([0, 0, 1, flags])
        entries = [(rng.choice([1, 2, 3, 4, 5, 6, 8, 9, 0, 0xFF]),
                    rng.choice([0, 1, 100, 16384, 65535, 2**24 - 1, 2**24, 2**31 - 1, 2**31,
                                2**32 - 1]))
                   for _ in range(rng.choice([0, 1, 2, 6]))]
        payload = b"".join(struct.pack(">HI", k, v) for k, v in entries)
        sid = rng.choice([0, 0, 0, sid])
    elif name == "PING":
        payload = rng.randbytes(rng.choice([8, 8, 8, 0, 9]))
        flags = rng.choice([0, 0, 1, flags])
        sid = rng.choice([0, 0, sid])
    elif name == "GOAWAY":
        payload = struct.pack(">II", rng.randrange(2**31), rng.choice([0, 1, 2, 11, 99])) + \
            rng.randbytes(rng.choice([0, 10]))
        sid = rng.choice([0, 0, sid])
    elif name == "WINDOW_UPDATE":
        payload = struct.pack(">I", rng.choice([0, 1, 65535, 2**31 - 1, 2**31, 2**32 - 1]))
        sid = rng.choice([0, sid])
    else:
        payload = rng.randbytes(rng.randrange(100))
    ftype = FRAME_TYPES.get(name, rng.randrange(10, 256))
    length = None
    if rng.random() < 0.05:
        length = rng.choice([0, len(payload) + 1, 16384, 2**20 + 1, 2**24 - 1])
    return frame(ftype, flags, sid, payload, length)


def valid_request(rng: random.Random, state: dict[str, int], enc: Encoder, port: int,
                  method: str | None = None) -> bytes:
    """A well-formed call: HEADERS, a few messages, END_STREAM (sometimes left open,
    sometimes reset)."""
    state["next"] += 2
    sid = state["next"]
    method = method or rng.choice(METHODS[:-1])
    headers = [(b":method", b"POST"), (b":scheme", b"http"),
               (b":path", f"/{SERVICE}/{method}".encode()),
               (b":authority", f"127.0.0.1:{port}".encode()),
               (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    if rng.random() < 0.3:
        headers.append((b"grpc-timeout", rng.choice([b"50m", b"1S", b"99999999H"])))
    out = [frame(1, 0x4, sid, enc.encode(headers))]
    for _ in range(rng.choice([1, 1, 2, 5])):
        body = rng.randbytes(rng.choice([0, 10, 60]))
        out.append(frame(0, 0, sid, b"\x00" + struct.pack(">I", len(body)) + body))
    roll = rng.random()
    if roll < 0.8:
        out.append(frame(0, 0x1, sid, b""))
    elif roll < 0.9:
        out.append(frame(3, 0, sid, struct.pack(">I", 8)))  # RST_STREAM CANCEL
    return b"".join(out)


def settings_frame(rng: random.Random) -> bytes:
    entries = [(4, rng.choice([65535, 0, 2**31 - 1]))] if rng.random() < 0.3 else []
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in entries))


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.choice([1, 2, 5, 20])):
        if not data:
            break
        roll = rng.random()
        at = rng.randrange(len(data))
        if roll < 0.5:
            data[at] = rng.randrange(256)
        elif roll < 0.7:
            del data[at: at + rng.randrange(1, 64)]
        elif roll < 0.85:
            data[at:at] = data[at: at + rng.randrange(1, 200)]
        else:
            data[at:at] = rng.randbytes(rng.randrange(1, 32))
    return bytes(data)


def h2_valid_traffic(rng: random.Random, port: int) -> tuple[Any, list[bytes]]:
    """Chunks of valid client traffic from h2 itself (streams, pings, settings,
    window updates, resets), and the h2 connection to feed replies to."""
    import h2.config
    import h2.connection

    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=False))
    conn.initiate_connection()
    chunks = [conn.data_to_send()]
    for _ in range(rng.choice([1, 3, 10, 40])):
        roll = rng.random()
        try:
            if roll < 0.6:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [
                    (b":method", b"POST"), (b":scheme", b"http"),
                    (b":path", f"/{SERVICE}/{rng.choice(METHODS)}".encode()),
                    (b":authority", f"127.0.0.1:{port}".encode()),
                    (b"content-type", b"application/grpc+proto"), (b"te", b"trailers")])
                for _ in range(rng.choice([0, 1, 3])):
                    body = rng.randbytes(rng.choice([1, 100, 5000]))
                    message = b"\x00" + struct.pack(">I", len(body)) + body
                    if len(message) <= conn.local_flow_control_window(sid):
                        conn.send_data(sid, message)
                if rng.random() < 0.85:
                    conn.end_stream(sid)
                elif rng.random() < 0.5:
                    conn.reset_stream(sid, rng.choice([0, 8]))
            elif roll < 0.75:
                conn.ping(rng.randbytes(8))
            elif roll < 0.85:
                conn.update_settings({4: rng.choice([0, 1, 65535, 2**20]),
                                      5: rng.choice([16384, 2**20])})
            else:
                conn.increment_flow_control_window(rng.randrange(1, 2**20))
        except Exception:  # h2 refused (e.g. too many streams): stop making more
            break
        chunks.append(conn.data_to_send())
    return conn, [c for c in chunks if c]


# --------------------------------------------------------------------------- the fuzzer


@dataclass
class Case:
    """What one fuzzed connection did, for the failure report."""
    number: int
    seed: int
    kind: str = ""
    sent: int = 0
    end: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"#{self.number} seed={self.seed} {self.kind} sent={self.sent} {self.end} " \
               f"{self.seconds:.3f}s"


@dataclass
class Fuzzer:
    port: int
    seed: int
    stop_at: float
    lingering: list[tuple[float, socket.socket]] = field(default_factory=list)
    # guards lingering, recent, cases, kinds, kind_seconds
    lock: threading.Lock = field(default_factory=threading.Lock)
    recent: collections.deque[Case] = field(default_factory=lambda: collections.deque(maxlen=40))
    cases: int = 0
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    kind_seconds: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)

    def run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}/{index}")
        number = 0
        while time.monotonic() < self.stop_at:
            number += 1
            case_seed = rng.getrandbits(32)
            if REPLAY_CASE is not None:
                case_seed = REPLAY_CASE
            case = Case(number * FUZZ_THREADS + index, case_seed)
            with self.lock:
                self.recent.append(case)
                self.cases += 1
            started = time.monotonic()
            try:
                self.one_case(case)
            except Exception as exc:  # a bug of the fuzzer: report it, keep going
                self.errors.append(f"{case}: {exc!r}")
            case.seconds = time.monotonic() - started
            with self.lock:
                self.kinds[case.kind] += 1
                self.kind_seconds[case.kind] += case.seconds
            self.expire_lingering()

    def expire_lingering(self, everything: bool = False) -> None:
        now = time.monotonic()
        with self.lock:
            keep, drop = [], []
            for until, sock in self.lingering:
                (drop if everything or until <= now else keep).append((until, sock))
            self.lingering = keep
        for _, sock in drop:
            sock.close()

    def one_case(self, case: Case) -> None:
        rng = random.Random(case.seed)
        port = self.port
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        kept = False
        try:
            kept = self.drive(rng, case, sock)
        except OSError as exc:
            case.end = f"socket error {exc.__class__.__name__}"
        finally:
            if not kept:
                if rng.random() < 0.3:  # close with RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                sock.close()

    def drive(self, rng: random.Random, case: Case, sock: socket.socket) -> bool:
        """Send one case's bytes; True if the socket was kept open for a while."""
        enc = Encoder()
        state = {"next": -1}
        h2conn = None
        kind = rng.choice(["h2", "requests+frames", "frames", "headers", "raw", "mutated",
                           "idle", "h2"])
        case.kind = kind
        chunks: list[bytes]
        if kind == "h2":
            h2conn, chunks = h2_valid_traffic(rng, self.port)
        elif kind in ("requests+frames", "frames", "headers"):
            chunks = [PREFACE + settings_frame(rng)]
            for _ in range(rng.choice([1, 5, 20, 60])):
                if kind == "requests+frames" and rng.random() < 0.5:
                    chunks.append(valid_request(rng, state, enc, self.port))
                elif kind == "headers":
                    state["next"] += 2
                    block = enc.encode(header_list(rng, self.port))
                    if rng.random() < 0.3:  # split over CONTINUATION frames
                        cut = rng.randrange(len(block) + 1)
                        chunks.append(frame(1, 0, state["next"], block[:cut]) +
                                      frame(9, 0x4, state["next"], block[cut:]))
                    else:
                        chunks.append(frame(1, rng.choice([0x4, 0x5]), state["next"], block))
                    if rng.random() < 0.5:
                        chunks.append(frame(0, 1, state["next"], grpc_message(rng)))
                else:
                    chunks.append(random_frame(rng, state, enc, self.port))
        elif kind == "raw":
            head = PREFACE if rng.random() < 0.5 else b""
            chunks = [head + rng.randbytes(rng.choice([1, 9, 100, 5000, 100000]))]
        elif kind == "mutated":
            base = [PREFACE + settings_frame(rng)]
            for _ in range(rng.choice([1, 4, 10])):
                base.append(valid_request(rng, state, enc, self.port))
            chunks = [mutate(rng, b"".join(base))]
        else:  # idle: nothing, or part of the preface, then wait
            chunks = [PREFACE[: rng.choice([0, 0, 5, 23])]]
        reads = rng.random() < 0.8
        dribble = rng.random() < 0.1
        started = time.monotonic()
        budget = CASE_BYTES
        sock.setblocking(False)
        for chunk in chunks:
            chunk = chunk[:budget]
            budget -= len(chunk)
            pieces = [chunk[i: i + 7] for i in range(0, len(chunk), 7)][:50] if dribble \
                else [chunk]
            for piece in pieces:
                stopped = self.send_all(sock, piece, started + CASE_SECONDS, h2conn, reads)
                if stopped:
                    case.end = stopped
                    return self.maybe_linger(rng, sock)
                case.sent += len(piece)
                if dribble:
                    time.sleep(0.002)
            if budget <= 0 or time.monotonic() > started + CASE_SECONDS:
                break
        if rng.random() < 0.2:
            sock.shutdown(socket.SHUT_WR)  # half-close: the server may still answer
        if reads:
            case.end = self.read_for(sock, rng.choice([0.0, 0.02, 0.1]), h2conn)
        return self.maybe_linger(rng, sock)

    def maybe_linger(self, rng: random.Random, sock: socket.socket) -> bool:
        if rng.random() < 0.15:
            with self.lock:
                if len(self.lingering) < MAX_LINGERING:
                    self.lingering.append((time.monotonic() + rng.uniform(0.1, 3.0), sock))
                    return True
        return False

    def send_all(self, sock: socket.socket, data: bytes, deadline: float, h2conn: Any,
                 reads: bool) -> str:
        """Send ``data`` by ``deadline``, reading replies meanwhile if ``reads``; why
        it stopped early, or "" once all is sent."""
        view = memoryview(data)
        while view:
            remaining = min(deadline, self.stop_at) - time.monotonic()
            if remaining <= 0:
                return "send stalled" if time.monotonic() < self.stop_at else "time"
            readable, writable, _ = select.select([sock] if reads else [], [sock], [],
                                                  min(remaining, 0.1))
            if readable and not self.read_some(sock, h2conn):
                return "server closed"
            if writable:
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    continue
                view = view[sent:]
        return ""

    def read_some(self, sock: socket.socket, h2conn: Any) -> bool:
        """Read what is there; False once the server closed. Replies go to h2 (in
        the valid-traffic case) so that it answers PINGs and SETTINGS and reopens
        windows, like a real client."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        if h2conn is not None:
            try:
                for event in h2conn.receive_data(data):
                    length = getattr(event, "flow_controlled_length", 0)
                    if length:
                        h2conn.acknowledge_received_data(length, event.stream_id)
                out = h2conn.data_to_send()
                if out:
                    sock.send(out)
            except Exception:
                pass  # h2 gave up on this connection (or the socket is full): fine
        return True

    def read_for(self, sock: socket.socket, seconds: float, h2conn: Any) -> str:
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            readable, _, _ = select.select([sock], [], [], max(0.0, remaining))
            if readable and not self.read_some(sock, h2conn):
                return "server closed"
            if remaining <= 0:
                return "open"


# --------------------------------------------------------------------------- the test


@pytest.mark.timeout(int(FUZZ_SECONDS) + 120)
def test_fuzzed_frames_neither_crash_hang_nor_leak(fuzzed_server: ServerProcess):
    seed = int(os.environ.get("DUBBO_FUZZ_SEED", random.randrange(2**32)))
    print(f"fuzz seed {seed} (DUBBO_FUZZ_SEED={seed} replays it), {FUZZ_SECONDS:.0f}s")
    port = fuzzed_server.port
    problems: list[str] = []

    # Baseline, once a few calls have warmed the server up.
    for _ in range(5):
        miss = probe(port)
        assert miss is None, f"the server does not answer before the fuzz: {miss}"
    time.sleep(0.5)  # the probes' connections close on the server's side too
    baseline = fuzzed_server.status()
    baseline_sockets = fuzzed_server.sockets()
    baseline_others, baseline_workers = split_threads(server_threads(port))

    fuzzer = Fuzzer(port, seed, time.monotonic() + FUZZ_SECONDS)
    misses: list[str] = []
    probes = 0
    peak = {"rss": baseline["VmRSS"], "threads": baseline["Threads"],
            "sockets": baseline_sockets}
    stop = threading.Event()

    def probe_and_watch() -> None:
        nonlocal probes
        while not stop.wait(PROBE_EVERY):
            probes += 1
            miss = probe(port)
            if miss is not None:
                misses.append(f"at {FUZZ_SECONDS - (fuzzer.stop_at - time.monotonic()):.1f}s:"
                              f" {miss}")
            try:
                status = fuzzed_server.status()
                sockets = fuzzed_server.sockets()
            except OSError:  # the server is gone; reported below
                return
            peak["rss"] = max(peak["rss"], status["VmRSS"])
            peak["threads"] = max(peak["threads"], status["Threads"])
            peak["sockets"] = max(peak["sockets"], sockets)

    threads = [threading.Thread(target=fuzzer.run, args=(i,), name=f"fuzzer-{i}")
               for i in range(FUZZ_THREADS)]
    watcher = threading.Thread(target=probe_and_watch, name="fuzz-probe")
    for thread in [*threads, watcher]:
        thread.start()
    try:
        for thread in threads:
            thread.join(FUZZ_SECONDS + 30)
            if thread.is_alive():
                problems.append(f"{thread.name} did not finish (the fuzzer hung)")
    finally:
        stop.set()
        watcher.join(10)
        fuzzer.expire_lingering(everything=True)

    alive = fuzzed_server.process.poll() is None
    if not alive:
        problems.append(f"the server died (exit code {fuzzed_server.process.returncode})")
    if probes and len(misses) > max(1, MAX_PROBE_MISSES * probes):
        problems.append(f"{len(misses)} of {probes} probes missed during the fuzz: {misses[:5]}")
    if alive:  # the kernel's high-water mark also sees peaks between two samples
        peak["rss"] = max(peak["rss"], fuzzed_server.status()["VmHWM"])
    if peak["rss"] - baseline["VmRSS"] > RSS_PEAK_GROWTH:
        problems.append(f"server RSS grew by {(peak['rss'] - baseline['VmRSS']) / MiB:.0f} MiB"
                        f" during the fuzz")

    if alive:
        # Back to the baseline once the fuzzer has gone.
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            status, sockets = fuzzed_server.status(), fuzzed_server.sockets()
            others, workers = split_threads(server_threads(port))
            settled = (sockets <= baseline_sockets
                       and len(others) <= len(baseline_others)
                       and (not fuzzed_server.retires_workers or workers <= baseline_workers)
                       and status["VmRSS"] - baseline["VmRSS"] <= RSS_END_GROWTH)
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if sockets > baseline_sockets:
            problems.append(f"{sockets} sockets open, {baseline_sockets} before the fuzz")
        if len(others) > len(baseline_others):
            extra = collections.Counter(others) - collections.Counter(baseline_others)
            problems.append(f"threads left: {sorted(extra.elements())}")
        if fuzzed_server.retires_workers and workers > baseline_workers:
            problems.append(f"{workers} workers, {baseline_workers} before the fuzz "
                            f"(idle ones retire after {WORKER_IDLE_TIMEOUT}s)")
        if status["VmRSS"] - baseline["VmRSS"] > RSS_END_GROWTH:
            problems.append(f"server RSS {(status['VmRSS'] - baseline['VmRSS']) / MiB:.0f} MiB "
                            f"above the baseline {SETTLE_SECONDS:.0f}s after the fuzz")
        after = [probe(port) for _ in range(5)]
        if any(after):
            problems.append(f"probes after the fuzz failed: {[m for m in after if m]}")

    # Warnings about what the fuzzer sent are expected; a traceback (a thread that
    # died, or log.exception: an exception nobody expected) never is.
    log = fuzzed_server.log()
    crash = re.search(r"^(Traceback|Exception in thread|CRITICAL)", log, re.MULTILINE)
    if crash:
        count = len(re.findall(r"^(Traceback|Exception in thread|CRITICAL)", log, re.MULTILINE))
        problems.append(f"{count} tracebacks in the server log, the first:\n"
                        f"{log[max(0, crash.start() - 300): crash.start() + 2500]}")
    if fuzzer.errors:
        problems.append(f"fuzzer bugs: {fuzzer.errors[:3]}")
    print(f"{fuzzer.cases} connections, {probes} probes ({len(misses)} missed), peak RSS "
          f"+{(peak['rss'] - baseline['VmRSS']) / MiB:.0f} MiB, peak threads "
          f"{peak['threads']} (baseline {baseline['Threads']}), peak sockets "
          f"{peak['sockets']} (baseline {baseline_sockets}); per kind: "
          + ", ".join(f"{k} {n} ({fuzzer.kind_seconds[k] / n * 1000:.0f} ms)"
                      for k, n in fuzzer.kinds.most_common()))
    assert not problems, (
        f"fuzz seed {seed} (rerun with DUBBO_FUZZ_SEED={seed}): " + "; ".join(problems)
        + "\nlast connections:\n  " + "\n  ".join(map(str, list(fuzzer.recent)[-15:])))


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    _serve()
