"""Large messages' buffers stay in glibc's heap between calls (dubbo/transport/heap.py).

Issue 11: a 4 MiB protobuf echo allocated ~16 MiB per call right at glibc's trim line,
so on some runs every call faulted ~4,000 zero-filled pages in again (2 to 6 ms of CPU
per echo, server or client, depending on the heap's layout). The glibc checks run in a
fresh interpreter each: glibc's thresholds are per process and only ever grow.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from memory_pair import memory_pair

import dubbo.client.client
import dubbo.server.server
from dubbo.proxy.handlers import RpcMethodHandler
from dubbo.transport import Inbox, heap
from dubbo.wire.framing import encode_message

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or heap._find_malloc() is None,
    reason="glibc's malloc thresholds")

# One worker thread does what a 4 MiB echo does to glibc: an 8 MiB block mapped and
# freed first (protobuf's encoder buffer: glibc then maps only blocks above 8 MiB and
# trims a free heap top above 16 MiB), then rounds of 18 MiB allocated, written, freed.
# Prints the thread's minor page faults per round.
_ROUNDS = textwrap.dedent("""
    import ctypes, json, resource, sys, threading
    from dubbo.transport import heap
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MiB = 1024 * 1024
    out = []

    def work():
        libc.free(libc.malloc(8 * MiB))
        primed = heap.keep_heap_for(4 * MiB) if sys.argv[1] == "hint" else 0
        faults = []
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            blocks = [libc.malloc(6 * MiB) for _ in range(3)]
            for block in blocks:
                ctypes.memset(block, 1, 6 * MiB)
            for block in blocks:
                libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
        out.append({"primed": primed, "faults": faults})

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(json.dumps(out[0]))
""")


def _rounds(mode: str, **env: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT, **env})
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


@glibc_only
@pytest.mark.timeout(60)
def test_a_large_call_pattern_faults_its_pages_in_once_not_every_call() -> None:
    pages = 18 * MiB // 4096  # 4,608 pages a round when glibc trims them every time
    without = _rounds("none")
    assert all(f >= pages * 0.9 for f in without["faults"]), without  # the problem
    with_hint = _rounds("hint")
    assert with_hint["primed"] == heap.HEAP_HINT_MAX
    first, *later = with_hint["faults"]  # type: ignore[misc]
    assert first >= pages * 0.9  # the first round faults in what later ones reuse
    assert all(f < pages * 0.05 for f in later), with_hint


@glibc_only
@pytest.mark.timeout(60)
def test_a_users_malloc_settings_win() -> None:
    """With a threshold set by the user glibc stops adjusting its own, and so does the
    hint: blocks above the user's mmap threshold stay mapped and unmapped every time."""
    pages = 18 * MiB // 4096
    result = _rounds("hint", MALLOC_MMAP_THRESHOLD_=str(128 * 1024))
    assert all(f >= pages * 0.9 for f in result["faults"]), result


def test_the_hint_primes_once_per_larger_size_and_is_bounded(monkeypatch) -> None:
    freed: list[int] = []
    blocks: dict[int, int] = {}

    def malloc(size: int) -> int:
        blocks[len(blocks) + 1] = size
        return len(blocks)

    monkeypatch.setattr(heap, "_malloc_free", (malloc, lambda block: freed.append(blocks[block])))
    monkeypatch.setattr(heap, "_looked_up", True)
    monkeypatch.setattr(heap, "_primed", 0)
    assert heap.keep_heap_for(heap.HEAP_HINT_MIN - 1) == 0  # small messages change nothing
    assert heap.keep_heap_for(heap.HEAP_HINT_MIN) == 4 * heap.HEAP_HINT_MIN
    assert heap.keep_heap_for(MiB) == 4 * MiB
    assert heap.keep_heap_for(MiB) == 0  # once per size
    assert heap.keep_heap_for(MiB - 1000) == 0
    assert heap.keep_heap_for(MiB + 1) == 8 * MiB  # a power of two: few sizes ever
    assert heap.keep_heap_for(64 * MiB) == heap.HEAP_HINT_MAX  # bounded
    assert heap.keep_heap_for(64 * MiB) == 0
    assert freed == [4 * heap.HEAP_HINT_MIN, 4 * MiB, 8 * MiB, heap.HEAP_HINT_MAX]

    monkeypatch.setattr(heap, "_malloc_free", None)  # not glibc: nothing to do
    monkeypatch.setattr(heap, "_primed", 0)
    assert heap.keep_heap_for(4 * MiB) == 0


def test_glibc_is_looked_up_once_and_only_when_a_large_message_comes(monkeypatch) -> None:
    lookups: list[int] = []

    def find() -> None:
        lookups.append(1)

    monkeypatch.setattr(heap, "_find_malloc", find)
    monkeypatch.setattr(heap, "_looked_up", False)
    monkeypatch.setattr(heap, "_malloc_free", None)
    monkeypatch.setattr(heap, "_primed", 0)
    assert heap.keep_heap_for(1000) == 0
    assert lookups == []
    assert heap.keep_heap_for(MiB) == 0  # not glibc (as find() says)
    assert heap.keep_heap_for(2 * MiB) == 0
    assert lookups == [1]


def test_the_inbox_tells_on_large_the_size_of_large_messages_only() -> None:
    told: list[int] = []
    inbox = Inbox(8 * MiB, on_large=told.append)
    inbox.feed(encode_message(b"x" * 1000), 1005)  # small: not told
    large = encode_message(b"y" * (2 * MiB))
    inbox.feed(large[:MiB], MiB)
    assert told == []  # not complete yet
    inbox.feed(large[MiB:], len(large) - MiB)
    assert told == [2 * MiB]
    assert [len(inbox.get(None)[0] or b"") for _ in range(2)] == [1000, 2 * MiB]


@pytest.mark.timeout(30)
def test_the_server_hints_what_it_receives_and_sends_the_client_what_it_receives(
        monkeypatch) -> None:
    """A server sending large replies to small requests (a download) is hinted too: its
    threads share one arena (dubbo/server/memory.py), whose free top the idle trim
    returns. The client has no idle trim, so it is told only what it receives."""
    told: dict[str, list[int]] = {"server": [], "client": []}
    lock = threading.Lock()

    def recorder(side: str):
        def record(size: int) -> None:
            with lock:
                told[side].append(size)
        return record

    monkeypatch.setattr(dubbo.server.server, "keep_heap_for", recorder("server"))
    monkeypatch.setattr(dubbo.client.client, "keep_heap_for", recorder("client"))
    with memory_pair(RpcMethodHandler.unary(lambda r: r * 3 if len(r) < 40_000 else r + b"!",
                                            "grow")) as pair:
        grow = pair.client.unary("grow")
        assert len(grow(b"z" * (2 * MiB), timeout=20)) == 2 * MiB + 1
        # The client tells the reply it received; the server the request, then the reply.
        assert told == {"client": [2 * MiB + 1], "server": [2 * MiB, 2 * MiB + 1]}
        assert grow(b"s" * 5, timeout=20) == b"s" * 15  # small: nobody is told
        assert len(grow(b"d" * 30_000, timeout=20)) == 90_000  # a download: 90 KB reply
    assert told == {"client": [2 * MiB + 1, 90_000], "server": [2 * MiB, 2 * MiB + 1, 90_000]}


def test_ctypes_signatures_match_glibc() -> None:
    """malloc's result is a pointer (c_void_p): the default int return would cut a 64-bit
    address, and free() of that would crash the process."""
    found = heap._find_malloc()
    if found is None:
        pytest.skip("not glibc")
    malloc, free = found
    assert malloc.restype is ctypes.c_void_p  # type: ignore[attr-defined]
    assert free.argtypes == [ctypes.c_void_p]  # type: ignore[attr-defined]


def test_the_server_trims_on_a_few_quiet_ticks_after_calls_end(monkeypatch) -> None:
    """Memory let go a while after the last call ended (a loaded machine, workers
    unwinding) is still returned: the trim timer trims on each change and on the
    QUIET_TRIMS quiet ticks after it, then stops trimming an idle server."""
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcServiceHandler

    trims: list[int] = []
    collections: list[int] = []
    monkeypatch.setattr(dubbo.server.server, "release_free_memory",
                        lambda: trims.append(1) or True)
    monkeypatch.setattr(dubbo.server.server.gc, "collect", lambda: collections.append(1))

    class Timer:
        def call_later(self, delay: float, fn) -> None:
            pass  # ticks are driven by hand below

    server = dubbo.Server(ServiceConfig(RpcServiceHandler("t.T", []), host="127.0.0.1",
                                        port=0))
    server.timer = Timer()  # type: ignore[assignment]
    quiet = dubbo.server.server.QUIET_TRIMS
    server._trim_memory()
    assert trims == []  # nothing ended yet
    server._ended += 5
    server._trim_memory()
    assert len(trims) == 1 and collections == []  # no collection while calls end
    for _ in range(quiet + 3):
        server._trim_memory()
    assert len(trims) == 1 + quiet
    assert len(collections) == 1  # on the first quiet tick only
    server._ended += 1  # a new burst ends: the count starts again
    for _ in range(quiet + 3):
        server._trim_memory()
    assert len(trims) == 2 + 2 * quiet
    assert len(collections) == 2
