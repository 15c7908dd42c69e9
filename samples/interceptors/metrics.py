"""Prometheus metrics with the grpc-ecosystem names and labels (needs prometheus-client:
pip install 'dubbo[prometheus]'). A real server would serve them with
prometheus_client.start_http_server(9090); here they are printed.

    python samples/interceptors/metrics.py
"""

from prometheus_client import CollectorRegistry, generate_latest

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors.metrics import ClientMetricsInterceptor, ServerMetricsInterceptor
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Greeter"
registry = CollectorRegistry()  # leave it out to use prometheus_client's global REGISTRY


def greet(request):
    return b"hello " + request


def fail(request, context):
    context.abort(dubbo.StatusCode.NOT_FOUND, "no such user")


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(greet),
                                      RpcMethodHandler.unary(fail)])
server = dubbo.Server(ServiceConfig(service, port=0),
                      interceptors=[ServerMetricsInterceptor(registry=registry)]).start()
with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"),
                  interceptors=[ClientMetricsInterceptor(registry=registry)]) as client:
    for name in (b"alice", b"bob"):
        client.unary("greet")(name, timeout=5)
    try:
        client.unary("fail")(b"carol", timeout=5)
    except dubbo.RpcError:
        pass
server.stop()  # every call has ended: the server's counters are final

for line in generate_latest(registry).decode().splitlines():
    if line.startswith(("grpc_server_handled_total", "grpc_client_handled_total",
                        "grpc_server_handling_seconds_count")):
        print(line)
