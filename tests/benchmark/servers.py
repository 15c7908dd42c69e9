"""The benchmark's servers: ``python -m tests.benchmark.servers SYSTEM [--messages M]``.

Each serves on 127.0.0.1, prints its port as stdout's first line, and exits when stdin
closes, on SIGTERM, or after ``--max-seconds``. With ``--messages raw`` (the default) it
serves ``bench.Bench`` with raw-bytes methods (no protobuf, so the transport is what is
measured):

- ``Echo`` (unary): replies with the request;
- ``ServerStream``: the request is ``common.stream_request(count, size)``; replies
  ``count`` messages of ``size`` bytes;
- ``ClientStream``: counts the requests, replies ``common.encode_count(count)``;
- ``PingPong`` (bidi): replies to each request with it;
- ``Hold`` (bidi): acknowledges the first request, then waits for more until the client
  ends the stream (the idle-streams scenario).

With ``--messages protobuf`` it serves ``bench.PbBench`` with the messages of
messages.py, each system on its own protobuf path (dubbo: the handlers' deserializer
and serializer; grpcio: its method handlers with ``FromString``/``SerializeToString``,
what generated code registers; grpclib: its ``ProtoCodec``):

- ``Echo``: HelloRequest -> HelloReply with the request's name;
- ``ServerStream``: StreamRequest(count, name) -> ``count`` HelloReplies;
- ``ClientStream``: HelloRequests -> Count;
- ``PingPong``: a HelloReply for each HelloRequest;
- ``BlobEcho``: Blob -> the same Blob (the 4 MiB echo).

``floor`` is the minimal h2 server of floor.py (Echo, PingPong and BlobEcho only).

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
    PB_SERVICE,
    PROCS,
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


# -- protobuf handlers (every system) ------------------------------------------------

def pb_echo(request: Any, context: Any = None) -> Any:
    from .messages import HelloReply

    return HelloReply(message=request.name)


def pb_server_stream(request: Any, context: Any = None) -> Iterator[Any]:
    from .messages import HelloReply

    reply = HelloReply(message=request.name)
    for _ in range(request.count):
        yield reply


def pb_client_stream(requests: Iterable[Any], context: Any = None) -> Any:
    from .messages import Count

    count = 0
    for _ in requests:
        count += 1
    return Count(count=count)


def pb_ping_pong(requests: Iterable[Any], context: Any = None) -> Iterator[Any]:
    from .messages import HelloReply

    for request in requests:
        yield HelloReply(message=request.name)


def pb_blob_echo(request: Any, context: Any = None) -> Any:
    return request


def pb_methods() -> dict[str, tuple[str, Callable[..., Any], Any, Any]]:
    """Method name -> (call type, handler, request class, reply class)."""
    from .messages import Blob, Count, HelloReply, HelloRequest, StreamRequest

    return {"Echo": ("unary", pb_echo, HelloRequest, HelloReply),
            "ServerStream": ("server_stream", pb_server_stream, StreamRequest, HelloReply),
            "ClientStream": ("client_stream", pb_client_stream, HelloRequest, Count),
            "PingPong": ("bidi", pb_ping_pong, HelloRequest, HelloReply),
            "BlobEcho": ("unary", pb_blob_echo, Blob, Blob)}


# -- dubbo ---------------------------------------------------------------------------

def dubbo_service(messages: str) -> Any:
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    if messages == "protobuf":
        make = {"unary": RpcMethodHandler.unary,
                "server_stream": RpcMethodHandler.server_stream,
                "client_stream": RpcMethodHandler.client_stream,
                "bidi": RpcMethodHandler.bi_stream}
        return RpcServiceHandler(service_name=PB_SERVICE, method_handlers={
            name: make[kind](handler, method_name=name,
                             request_deserializer=request_type.FromString,
                             response_serializer=reply_type.SerializeToString)
            for name, (kind, handler, request_type, reply_type) in pb_methods().items()})
    return RpcServiceHandler(service_name=SERVICE, method_handlers={
        "Echo": RpcMethodHandler.unary(echo, method_name="Echo"),
        "ServerStream": RpcMethodHandler.server_stream(server_stream,
                                                       method_name="ServerStream"),
        "ClientStream": RpcMethodHandler.client_stream(client_stream,
                                                       method_name="ClientStream"),
        "PingPong": RpcMethodHandler.bi_stream(ping_pong, method_name="PingPong"),
        "Hold": RpcMethodHandler.bi_stream(hold, method_name="Hold"),
    })


def dubbo_accepts_processes() -> bool:
    """Whether this dubbo's Server takes ``processes=N`` (several serving processes)."""
    import inspect

    import dubbo

    return "processes" in inspect.signature(dubbo.Server).parameters


def start_dubbo(profile: str, messages: str,
                processes: int | None = None) -> tuple[int, Callable[[], None]]:
    import dubbo
    from dubbo.configs import ServiceConfig

    service = dubbo_service(messages)
    options: dict[str, Any] = {"max_concurrent_streams": MAX_CONCURRENT_STREAMS,
                               "max_receive_message_size": MAX_MESSAGE_SIZE,
                               "max_send_message_size": MAX_MESSAGE_SIZE}
    if DUBBO_WORKERS[profile] is not None:
        options["max_workers"] = DUBBO_WORKERS[profile]
        # The idle-streams row opens every stream on one connection on purpose.
        options["max_calls_per_connection"] = DUBBO_WORKERS[profile]
    if processes is not None:
        options["processes"] = processes
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0), **options).start()
    return server.port, lambda: server.stop(grace=1.0)


# -- grpcio --------------------------------------------------------------------------

def start_grpcio(profile: str, messages: str) -> tuple[int, Callable[[], None]]:
    import grpc

    if messages == "protobuf":
        make = {"unary": grpc.unary_unary_rpc_method_handler,
                "server_stream": grpc.unary_stream_rpc_method_handler,
                "client_stream": grpc.stream_unary_rpc_method_handler,
                "bidi": grpc.stream_stream_rpc_method_handler}
        handlers = grpc.method_handlers_generic_handler(PB_SERVICE, {
            name: make[kind](handler, request_deserializer=request_type.FromString,
                             response_serializer=reply_type.SerializeToString)
            for name, (kind, handler, request_type, reply_type) in pb_methods().items()})
    else:
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


def serve_threaded(system: str, profile: str, messages: str, max_seconds: float) -> None:
    """Serve until stdin closes, SIGTERM, or ``max_seconds``; the main thread waits on
    stdin, so the server process has no thread of the harness's own."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.alarm(max(1, int(max_seconds)))
    if system == "grpcio":
        port, stop = start_grpcio(profile, messages)
    else:
        port, stop = start_dubbo(profile, messages,
                                 PROCS if system == "dubbo-procs2" else None)
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


class GrpclibPbBench:
    """``bench.PbBench`` for grpclib: protobuf message types, grpclib's ProtoCodec."""

    def __mapping__(self) -> dict[str, Any]:
        from grpclib.const import Cardinality, Handler

        cardinality = {"unary": Cardinality.UNARY_UNARY,
                       "server_stream": Cardinality.UNARY_STREAM,
                       "client_stream": Cardinality.STREAM_UNARY,
                       "bidi": Cardinality.STREAM_STREAM}
        funcs = {"Echo": _grpclib_pb_echo, "ServerStream": _grpclib_pb_server_stream,
                 "ClientStream": _grpclib_pb_client_stream,
                 "PingPong": _grpclib_pb_ping_pong, "BlobEcho": _grpclib_echo}
        return {path(name, PB_SERVICE): Handler(funcs[name], cardinality[kind],
                                                request_type, reply_type)
                for name, (kind, _, request_type, reply_type) in pb_methods().items()}


async def _grpclib_pb_echo(stream: Any) -> None:
    from .messages import HelloReply

    request = await stream.recv_message()
    await stream.send_message(HelloReply(message=request.name))


async def _grpclib_pb_server_stream(stream: Any) -> None:
    from .messages import HelloReply

    request = await stream.recv_message()
    reply = HelloReply(message=request.name)
    for _ in range(request.count):
        await stream.send_message(reply)


async def _grpclib_pb_client_stream(stream: Any) -> None:
    from .messages import Count

    count = 0
    async for _ in _messages(stream):
        count += 1
    await stream.send_message(Count(count=count))


async def _grpclib_pb_ping_pong(stream: Any) -> None:
    from .messages import HelloReply

    while (request := await stream.recv_message()) is not None:
        await stream.send_message(HelloReply(message=request.name))


async def serve_grpclib(messages: str, max_seconds: float) -> None:
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
    if messages == "protobuf":
        from grpclib.encoding.proto import ProtoCodec

        server = Server([GrpclibPbBench()], codec=ProtoCodec())
    else:
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


# -- floor ---------------------------------------------------------------------------

def floor_handlers() -> dict[bytes, Callable[[bytes], bytes]]:
    """Path -> request bytes to reply bytes; the protobuf ones parse and serialise."""
    from .messages import Blob, HelloReply, HelloRequest

    def pb_hello(data: bytes) -> bytes:
        return bytes(HelloReply(message=HelloRequest.FromString(data).name)
                     .SerializeToString())

    def pb_blob(data: bytes) -> bytes:
        return bytes(Blob.FromString(data).SerializeToString())

    def identity(data: bytes) -> bytes:
        return data

    return {path("Echo").encode(): identity, path("PingPong").encode(): identity,
            path("Echo", PB_SERVICE).encode(): pb_hello,
            path("PingPong", PB_SERVICE).encode(): pb_hello,
            path("BlobEcho", PB_SERVICE).encode(): pb_blob}


def serve_floor(max_seconds: float) -> None:
    """One thread serves every connection in turn; a daemon thread only watches stdin."""
    import threading

    from .floor import serve

    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.alarm(max(1, int(max_seconds)))
    handlers = floor_handlers()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def watch_stdin() -> None:
        while os.read(sys.stdin.fileno(), 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    try:
        serve(listener, handlers)
    except _Stop:
        pass
    finally:
        signal.alarm(0)
        listener.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.servers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--profile", choices=("default", "idle"), default="default")
    parser.add_argument("--messages", choices=("raw", "protobuf"), default="raw",
                        help="raw bytes (bench.Bench) or protobuf (bench.PbBench)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="exit after this long whatever happens (default 900)")
    args = parser.parse_args(argv)
    if args.system == "grpclib":
        asyncio.run(serve_grpclib(args.messages, args.max_seconds))
    elif args.system == "floor":
        serve_floor(args.max_seconds)
    else:
        serve_threaded(args.system, args.profile, args.messages, args.max_seconds)
    os._exit(0)  # do not wait for handler threads a stopped server left behind


if __name__ == "__main__":
    main()
