"""Compression: gzip for every call of a client and of a server, deflate for one call,
and the handler choosing the encoding of its own reply.

    python samples/features/compressed_calls.py
"""

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Compression"
TEXT = b"All work and no play makes Jack a dull boy.\n" * 24_000  # ~1 MiB


def echo(request, context):
    return request


def echo_deflate(request, context):
    context.set_compression("deflate")  # this reply only
    return request


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(echo),
                                      RpcMethodHandler.unary(echo_deflate)])
server = dubbo.Server(ServiceConfig(service, port=0), compression="gzip").start()
url = f"tri://127.0.0.1:{server.port}/{SERVICE}"

with dubbo.Client(ReferenceConfig.from_url(url), compression="gzip") as client:
    reply = client.unary("echo")(TEXT, timeout=10)
    print(f"client: gzip both ways, {len(reply)} bytes back, intact: {reply == TEXT}")
    reply = client.unary("echo_deflate")(TEXT, timeout=10, compression="deflate")
    print(f"client: deflate for one call, {len(reply)} bytes back, intact: {reply == TEXT}")

with dubbo.Client(ReferenceConfig.from_url(url + "?compression=bzip2")) as client:
    reply = client.unary("echo")(TEXT, timeout=10)
    print(f"client: bzip2 from the URL, {len(reply)} bytes back, intact: {reply == TEXT}")

server.stop()
