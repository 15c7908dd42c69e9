"""OpenTelemetry tracing: a client span and a server span per call, one trace across
the wire (W3C traceparent). Needs opentelemetry-api and, to export spans,
opentelemetry-sdk: pip install 'dubbo[opentelemetry]' opentelemetry-sdk.

    python samples/interceptors/tracing.py
"""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors.tracing import OpenTelemetryInterceptor
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

# A real program exports to a collector (e.g. OTLPSpanExporter); here spans are kept.
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

SERVICE = "org.apache.dubbo.samples.Greeter"


def greet(request, context):
    print(f"server: traceparent = {dict(context.invocation_metadata())['traceparent']}")
    return b"hello " + request


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(greet)])
server = dubbo.Server(ServiceConfig(service, port=0),
                      interceptors=[OpenTelemetryInterceptor()]).start()
with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"),
                  interceptors=[OpenTelemetryInterceptor()]) as client:
    with trace.get_tracer("sample").start_as_current_span("checkout"):
        client.unary("greet")(b"alice", timeout=5)
server.stop()

for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time):
    parent = f"{span.parent.span_id:016x}" if span.parent else "none"
    print(f"span: {span.name} kind={span.kind.name} trace={span.context.trace_id:032x} "
          f"id={span.context.span_id:016x} parent={parent} "
          f"status_code={span.attributes.get('rpc.grpc.status_code', '-')}")
