"""Errors: status codes and messages, trailing metadata with the error, and rich error
details (``grpc-status-details-bin``, a serialized ``google.rpc.Status``).

    python samples/features/errors.py
"""

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "org.apache.dubbo.samples.Errors"

try:  # pip install googleapis-common-protos (grpcio-status brings it)
    from google.rpc import code_pb2, status_pb2
except ImportError:  # pragma: no cover - the sample still runs, with raw bytes
    status_pb2 = None


def lookup(request, context):
    if request == b"abort":
        context.abort(dubbo.StatusCode.NOT_FOUND, "no such user: ü")
    if request == b"set_code":
        context.set_code(dubbo.StatusCode.FAILED_PRECONDITION)
        context.set_details("account locked")
        return b""
    if request == b"rich":
        if status_pb2 is not None:
            details = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT,
                                        message="name must not be empty").SerializeToString()
        else:
            details = b"\x08\x03"
        raise dubbo.RpcError(dubbo.StatusCode.INVALID_ARGUMENT, "name must not be empty",
                             trailing_metadata=[("grpc-status-details-bin", details)])
    raise ValueError("a bug in the handler")  # -> UNKNOWN, the server keeps serving


service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(lookup)])
server = dubbo.Server(ServiceConfig(service, port=0)).start()

with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")) as client:
    for kind in (b"abort", b"set_code", b"rich", b"crash"):
        try:
            client.unary("lookup")(kind, timeout=5)
        except dubbo.RpcError as err:
            print(f"client: {kind.decode()}: {err.code.name} {err.details!r}")
            if err.status_details is not None:
                if status_pb2 is not None:
                    status = status_pb2.Status.FromString(err.status_details)
                    print(f"client:   status details: code={status.code} "
                          f"message={status.message!r}")
                else:
                    print(f"client:   status details: {len(err.status_details)} bytes")

server.stop()
