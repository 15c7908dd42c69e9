"""The server the hostile tests attack, run in a process of its own so that its memory
and threads can be read from /proc without the test's own counted in.

    python serve.py '{"max_concurrent_streams": 4, "send_timeout": 2.0}'

The JSON object is passed to ``dubbo.Server`` as keyword arguments (``flood_limits``, a
mapping, becomes ``dubbo.FloodLimits``). The bound port is printed as
``PORT <n>`` on stdout once the server serves. Logs go to stderr.

Service ``hostile.Test`` (requests and replies are raw bytes):

* ``Echo``   unary, returns the request;
* ``Slow``   unary, request = seconds as ASCII; sleeps that long (while the call is
  active) and returns ``b"slow"``;
* ``Nap``    unary, request = seconds (at most 10); sleeps without looking at the
  call, so only the server's timer can end it at its deadline;
* ``Stream`` server stream, request = ``struct.pack("!II", count, size)``; yields
  ``count`` replies of ``size`` bytes;
* ``Sink``   bidi stream that never reads its requests; returns when the call ends;
* ``Stats``  unary, returns JSON ``{"running": handlers inside Slow/Stream/Sink,
  "threads": [thread names]}``.

Setting ``HOSTILE_LENIENT=1`` drops options this ``dubbo.Server`` does not accept (with
a note on stderr): only for checking the tests' own harness against an older server.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import logging
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

SERVICE = "hostile.Test"
HANDLER_LIMIT = 120.0  # seconds any handler lives at most, whatever the peer does

_running_lock = threading.Lock()  # guards _running
_running = 0


def _enter() -> None:
    global _running
    with _running_lock:
        _running += 1


def _leave() -> None:
    global _running
    with _running_lock:
        _running -= 1


def echo(request: bytes) -> bytes:
    return request


def slow(request: bytes, context: Any) -> bytes:
    _enter()
    try:
        seconds = min(float(request or b"1"), HANDLER_LIMIT)
        end = time.monotonic() + seconds
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.02)
        return b"slow"
    finally:
        _leave()


def nap(request: bytes) -> bytes:
    """Sleeps blindly (never looks at the call): only the server's timer can end the
    call at its deadline."""
    time.sleep(min(float(request or b"1"), 10.0))
    return b"nap"


def stream(request: bytes, context: Any) -> Iterator[bytes]:
    _enter()
    try:
        count, size = struct.unpack("!II", request[:8])
        reply = b"x" * size
        for _ in range(count):
            yield reply
    finally:
        _leave()


def sink(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    _enter()
    try:
        end = time.monotonic() + HANDLER_LIMIT
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.02)
        return
        yield b""  # a generator that yields nothing
    finally:
        _leave()


def stats(request: bytes) -> bytes:
    with _running_lock:
        running = _running
    names = sorted(t.name for t in threading.enumerate())
    return json.dumps({"running": running, "threads": names}).encode()


def _options(raw: dict[str, Any], server_class: type) -> dict[str, Any]:
    options = dict(raw)
    if isinstance(options.get("flood_limits"), dict):
        from dubbo.wire.limits import FloodLimits  # type: ignore[import-not-found]

        options["flood_limits"] = FloodLimits(**options["flood_limits"])
    if os.environ.get("HOSTILE_LENIENT") == "1":
        accepted = inspect.signature(server_class.__init__).parameters
        for name in list(options):
            if name not in accepted:
                print(f"serve.py: HOSTILE_LENIENT: dropping unknown option {name}",
                      file=sys.stderr, flush=True)
                del options[name]
    return options


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    raw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    service = RpcServiceHandler(SERVICE, [
        RpcMethodHandler.unary(echo, method_name="Echo"),
        RpcMethodHandler.unary(slow, method_name="Slow"),
        RpcMethodHandler.unary(nap, method_name="Nap"),
        RpcMethodHandler.server_stream(stream, method_name="Stream"),
        RpcMethodHandler.bi_stream(sink, method_name="Sink"),
        RpcMethodHandler.unary(stats, method_name="Stats"),
    ])
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                          **_options(raw, dubbo.Server))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    faulthandler.register(signal.SIGUSR1)  # a hung server's stacks, on demand
    print(f"PORT {server.port}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(grace=0)


if __name__ == "__main__":
    main()
