"""Interceptors: a bearer-token check, an access log and one of your own, on a server
and a client. The first interceptor in the list is the outermost.

    python samples/interceptors/interceptors.py
"""

import logging
import sys

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors import (
    BearerTokenClientInterceptor,
    BearerTokenServerInterceptor,
    LoggingInterceptor,
    ServerInterceptor,
)
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

# One log line per call from LoggingInterceptor ("dubbo.access"); the sample's own lines
# go through logging too, so lines from the server's threads never break into them.
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
logging.getLogger("dubbo.server").setLevel(logging.WARNING)
log = logging.getLogger("sample")

SERVICE = "org.apache.dubbo.samples.Greeter"
TOKENS = {"s3cret": "alice"}


class ServedBy(ServerInterceptor):
    """Tells the handler who called (request metadata) and the client who answered."""

    def intercept_server(self, continuation, request, call):
        token = dict(call.metadata)["authorization"][len("Bearer "):]
        call.metadata.append(("x-user", TOKENS[token]))
        call.add_initial_metadata([("x-served-by", "sample")])
        call.add_done_callback(lambda result: log.info(
            "server: %s ended %s", call.method_name, result.code.name))
        return continuation(request)


def greet(request, context):
    user = dict(context.invocation_metadata())["x-user"]
    return f"hello {user}".encode()


def tick(request):
    for i in range(3):
        yield f"tick {i}".encode()


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(greet),
                                      RpcMethodHandler.server_stream(tick)])
interceptors = [LoggingInterceptor(),                                   # outermost
                BearerTokenServerInterceptor(lambda token: token in TOKENS),
                ServedBy()]                                             # innermost
server = dubbo.Server(ServiceConfig(service, port=0), interceptors=interceptors).start()
url = f"tri://127.0.0.1:{server.port}/{SERVICE}"

with dubbo.Client(ReferenceConfig.from_url(url),
                  interceptors=[BearerTokenClientInterceptor("s3cret")]) as client:
    reply, call = client.unary("greet")(b"", timeout=5, with_call=True)
    served_by = dict(call.initial_metadata())["x-served-by"]
    log.info("client: %r, x-served-by = %s", reply.decode(), served_by)
    log.info("client: %s", [r.decode() for r in client.server_stream("tick")(b"", timeout=5)])

with dubbo.Client(ReferenceConfig.from_url(url)) as anonymous:
    try:
        anonymous.unary("greet")(b"", timeout=5)
    except dubbo.RpcError as err:
        log.info("client without a token: %s %r", err.code.name, err.details)

server.stop()
