"""Metadata: request headers the handler reads, initial and trailing metadata the client
reads, binary ``-bin`` values, the caller's address, and Dubbo version/group headers.

    python samples/features/metadata.py
"""

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Metadata"


def whoami(request, context):
    metadata = dict(context.invocation_metadata())
    print(f"server: x-user = {metadata['x-user']!r}, x-trace-bin = {metadata['x-trace-bin']!r}")
    print(f"server: peer = {context.peer()}")
    context.send_initial_metadata([("x-server", "sample")])
    context.set_trailing_metadata([("x-cost-bin", b"\x00\x2a")])
    return f"hello {metadata['x-user']}".encode()


def forbidden(request, context):
    context.set_trailing_metadata([("x-reason", "no-ticket")])  # sent with errors too
    context.abort(dubbo.StatusCode.PERMISSION_DENIED, "you shall not pass")


def version(request, context):
    return b"served by version 2.0.0"


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(whoami),
                                      RpcMethodHandler.unary(forbidden)])
v2 = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(version)])
server = dubbo.Server(ServiceConfig(service, port=0, version="1.0.0"))
server.add_service(v2, version="2.0.0")  # same service name, another version
server.start()
url = f"tri://127.0.0.1:{server.port}/{SERVICE}"

with dubbo.Client(ReferenceConfig.from_url(url + "?version=1.0.0")) as client:
    reply, call = client.unary("whoami")(
        b"", metadata=[("x-user", "alice"), ("x-trace-bin", b"\x01\x02")], with_call=True,
        timeout=5)
    print(f"client: reply = {reply.decode()!r}")
    print(f"client: initial metadata = {call.initial_metadata()}")
    print(f"client: trailing metadata = {call.trailing_metadata()}")
    print(f"client: code = {call.code().name}")
    try:
        client.unary("forbidden")(b"", timeout=5)
    except dubbo.RpcError as err:
        print(f"client: {err.code.name} {err.details!r}, trailing {err.trailing_metadata}")

with dubbo.Client(ReferenceConfig.from_url(url + "?version=2.0.0")) as client:
    print(f"client: ?version=2.0.0 -> {client.unary('version')(b'', timeout=5).decode()!r}")

server.stop()
