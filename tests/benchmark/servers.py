"""The benchmark's servers: ``python -m tests.benchmark.servers SYSTEM [--profile P]``.

Each serves ``bench.Bench`` on 127.0.0.1 with raw-bytes methods (no protobuf, so the
transport is what is measured), prints its port as stdout's first line, and exits when
stdin closes, on SIGTERM, or after ``--max-seconds``:

- ``Echo`` (unary): replies with the request;
- ``ServerStream``: the request is ``common.stream_request(count, size)``; replies
  ``count`` messages of ``size`` bytes;
- ``ClientStream``: counts the requests, replies ``common.encode_count(count)``;
- ``PingPong`` (bidi): replies to each request with it;
- ``Hold`` (bidi): acknowledges the first request, then waits for more until the client
  ends the stream (the idle-streams scenario).

Profile ``default`` sizes the servers for the call scenarios (grpcio: 16 workers);
``idle`` for 1,000 concurrent idle streams (grpcio: 1,100 workers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import (
    HOLD_ACK,
    MAX_MESSAGE_SIZE,
    SERVICE,
    SYSTEMS,
    encode_count,
    parse_stream_request,
    path,
)

GRPCIO_WORKERS = {"default": 16, "idle": 1100}
DUBBO_WORKERS = {"default": None, "idle": 1100}  # None: dubbo's default (1,000)
MAX_CONCURRENT_STREAMS = 2000


# -- handlers for the thread-per-call servers (dubbo and grpcio) ----------------------

def echo(request: bytes, context: Any = None) -> bytes:
    return request


def server_stream(request: bytes, context: Any = None) -> Iterator[bytes]:
    count, size = parse_stream_request(request)
    payload = b"x" * size
    for _ in range(count):
        yield payload


def client_stream(requests: Iterable[bytes], context: Any = None) -> bytes:
    count = 0
    for _ in requests:
        count += 1
    return encode_count(count)


def ping_pong(requests: Iterable[bytes], context: Any = None) -> Iterator[bytes]:
    yield from requests


def hold(requests: Iterable[bytes], context: Any = None) -> Iterator[bytes]:
    iterator = iter(requests)
    if next(iterator, None) is None:
        return
    yield HOLD_ACK
    for _ in iterator:
        pass


# -- dubbo ---------------------------------------------------------------------------

def start_dubbo(profile: str) -> tuple[int, Callable[[], None]]:
    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    service = RpcServiceHandler(service_name=SERVICE, method_handlers={
        "Echo": RpcMethodHandler.unary(echo, method_name="Echo"),
        "ServerStream": RpcMethodHandler.server_stream(server_stream,
                                                       method_name="ServerStream"),
        "ClientStream": RpcMethodHandler.client_stream(client_stream,
                                                       method_name="ClientStream"),
        "PingPong": RpcMethodHandler.bi_stream(ping_pong, method_name="PingPong"),
        "Hold": RpcMethodHandler.bi_stream(hold, method_name="Hold"),
    })
    options: dict[str, Any] = {"max_concurrent_streams": MAX_CONCURRENT_STREAMS,
                               "max_receive_message_size": MAX_MESSAGE_SIZE,
                               "max_send_message_size": MAX_MESSAGE_SIZE}
    if DUBBO_WORKERS[profile] is not None:
        options["max_workers"] = DUBBO_WORKERS[profile]
        # The idle-streams row opens every stream on one connection on purpose.
        options["max_calls_per_connection"] = DUBBO_WORKERS[profile]
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0), **options).start()
    return server.port, lambda: server.stop(grace=1.0)


# -- grpcio --------------------------------------------------------------------------

def start_grpcio(profile: str) -> tuple[int, Callable[[], None]]:
    import grpc

    handlers = grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "PingPong": grpc.stream_stream_rpc_method_handler(ping_pong),
        "Hold": grpc.stream_stream_rpc_method_handler(hold),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=GRPCIO_WORKERS[profile]),
                         handlers=[handlers],
                         options=[("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
                                  ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
                                  ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
                                  ("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return port, lambda: server.stop(grace=1.0).wait(5.0)


class _Stop(Exception):
    """Raised in the main thread by SIGTERM or SIGALRM."""


def _raise_stop(*_: object) -> None:
    raise _Stop


def serve_threaded(system: str, profile: str, max_seconds: float) -> None:
    """Serve until stdin closes, SIGTERM, or ``max_seconds``; the main thread waits on
    stdin, so the server process has no thread of the harness's own."""
    start = start_dubbo if system == "dubbo" else start_grpcio
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.alarm(max(1, int(max_seconds)))
    port, stop = start(profile)
    try:
        print(port, flush=True)
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except _Stop:
        pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop()


# -- grpclib -------------------------------------------------------------------------

async def _grpclib_echo(stream: Any) -> None:
    await stream.send_message(await stream.recv_message())


async def _grpclib_server_stream(stream: Any) -> None:
    count, size = parse_stream_request(await stream.recv_message())
    payload = b"x" * size
    for _ in range(count):
        await stream.send_message(payload)


async def _grpclib_client_stream(stream: Any) -> None:
    count = 0
    async for _ in _messages(stream):
        count += 1
    await stream.send_message(encode_count(count))


async def _grpclib_ping_pong(stream: Any) -> None:
    async for message in _messages(stream):
        await stream.send_message(message)


async def _grpclib_hold(stream: Any) -> None:
    if await stream.recv_message() is None:
        return
    await stream.send_message(HOLD_ACK)
    async for _ in _messages(stream):
        pass


async def _messages(stream: Any) -> AsyncIterator[bytes]:
    while (message := await stream.recv_message()) is not None:
        yield message


class GrpclibBench:
    """``bench.Bench`` for grpclib's low-level API (what generated ``*_grpc.py`` does)."""

    def __mapping__(self) -> dict[str, Any]:
        from grpclib.const import Cardinality, Handler

        methods = {
            "Echo": (_grpclib_echo, Cardinality.UNARY_UNARY),
            "ServerStream": (_grpclib_server_stream, Cardinality.UNARY_STREAM),
            "ClientStream": (_grpclib_client_stream, Cardinality.STREAM_UNARY),
            "PingPong": (_grpclib_ping_pong, Cardinality.STREAM_STREAM),
            "Hold": (_grpclib_hold, Cardinality.STREAM_STREAM),
        }
        return {path(name): Handler(func, cardinality, bytes, bytes)
                for name, (func, cardinality) in methods.items()}


async def serve_grpclib(max_seconds: float) -> None:
    from grpclib.server import Server

    from .rawcodec import RawCodec

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and accepted sockets inherit it (with proto 0 every reply waits ~40 ms).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = Server([GrpclibBench()], codec=RawCodec())
    await server.start(sock=listener)
    loop.add_reader(sys.stdin.fileno(), _on_stdin, done)
    print(port, flush=True)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), max_seconds)
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5.0)


def _on_stdin(done: asyncio.Event) -> None:
    if not os.read(sys.stdin.fileno(), 4096):
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        done.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.servers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--profile", choices=("default", "idle"), default="default")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="exit after this long whatever happens (default 900)")
    args = parser.parse_args(argv)
    if args.system == "grpclib":
        asyncio.run(serve_grpclib(args.max_seconds))
    else:
        serve_threaded(args.system, args.profile, args.max_seconds)
    os._exit(0)  # do not wait for handler threads a stopped server left behind


if __name__ == "__main__":
    main()
