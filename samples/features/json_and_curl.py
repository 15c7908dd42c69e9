"""JSON calls: curl-style HTTP/1.1 and HTTP/2 (as Dubbo Java 3.3 answers them) and
application/grpc+json, all on the server's one port. See docs/json-and-curl.md."""

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"))
import greeter_pb2

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.wire import json_codec

SERVICE = "org.apache.dubbo.samples.proto.Greeter"


def say_hello(request):
    if not request.name:
        raise dubbo.RpcError(dubbo.StatusCode.INVALID_ARGUMENT, "name is empty")
    return greeter_pb2.GreeterReply(message=f"hello, {request.name}")


def post(url, body):
    """HTTP/1.1 with the standard library: (status, JSON body)."""
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


if __name__ == "__main__":
    # The handler's FromString tells the server the request type: JSON works unchanged.
    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(
        say_hello, "sayHello", greeter_pb2.GreeterRequest.FromString,
        greeter_pb2.GreeterReply.SerializeToString)])
    with dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0)) as server:
        url = f"http://127.0.0.1:{server.port}/{SERVICE}/sayHello"
        print("HTTP/1.1:", *post(url, '{"name": "http"}'))
        print("HTTP/1.1 error:", *post(url, "{}"))
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H",
                                  "content-type: application/json", "-d", '{"name":"h2"}',
                                  url], capture_output=True, text=True, timeout=30).stdout
            print("curl HTTP/2:", out)
        else:
            print("curl HTTP/2: (curl not installed)")
        reference = ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")
        with dubbo.Client(reference, content_type="application/grpc+json") as client:
            call = client.unary("sayHello", json_codec.serializer(),
                                json_codec.deserializer(greeter_pb2.GreeterReply))
            print("grpc+json:", call(greeter_pb2.GreeterRequest(name="grpc")).message)
