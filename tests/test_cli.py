"""The CLI run as a user runs it (``python -m dubbo`` in a subprocess), against our
server with reflection, against grpcio's server with grpcio-reflection (v1alpha only)
and grpcio-health-checking, and its own ``serve`` demo (then curl'd and stopped with
Ctrl-C). Exit statuses: 0 ok, 1 call failed, 2 usage, 3 unreachable, 4 not SERVING."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import greeter_pb2
import pytest
from subprocesses import ctrl_c_works

import dubbo
from dubbo.configs import ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

REPO = Path(__file__).resolve().parent.parent
PROTO = REPO / "samples" / "proto" / "greeter.proto"
SERVICE = "org.apache.dubbo.samples.proto.Greeter"
Req, Reply = greeter_pb2.GreeterRequest, greeter_pb2.GreeterReply


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dubbo", *args], capture_output=True,
                          text=True, input=stdin, env=_env(), timeout=60)


# -- the Greeter, served by us and by grpcio ----------------------------------------

def say_hello(request, context):
    if request.name == "missing":
        if type(context).__module__.startswith("grpc"):  # grpcio takes only its own codes
            import grpc

            context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        context.abort(dubbo.StatusCode.NOT_FOUND, "no such user")
    if request.name == "slow":
        time.sleep(2)
    tag = dict(context.invocation_metadata()).get("x-tag", "")
    return Reply(message=f"hello {request.name}{tag}")


def client_stream(requests, context):
    return Reply(message="+".join(r.name for r in requests))


def server_stream(request, context):
    for i in range(3):
        yield Reply(message=f"{request.name} {i}")


def bi_stream(requests, context):
    for r in requests:
        yield Reply(message=r.name.upper())


@pytest.fixture
def ours():
    service = RpcServiceHandler(SERVICE, [
        RpcMethodHandler.unary(say_hello, "sayHello", Req.FromString, Reply.SerializeToString),
        RpcMethodHandler.client_stream(client_stream, "clientStream", Req.FromString,
                                       Reply.SerializeToString),
        RpcMethodHandler.server_stream(server_stream, "serverStream", Req.FromString,
                                       Reply.SerializeToString),
        RpcMethodHandler.bi_stream(bi_stream, "biStream", Req.FromString,
                                   Reply.SerializeToString),
    ], file_descriptor=greeter_pb2.DESCRIPTOR)
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                          reflection=True).start()
    yield f"tri://127.0.0.1:{server.port}"
    server.stop(grace=1)


@pytest.fixture
def grpcio_server():
    grpc = pytest.importorskip("grpc")
    reflection = pytest.importorskip("grpc_reflection.v1alpha.reflection")
    health = pytest.importorskip("grpc_health.v1.health")
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    kinds = {"sayHello": grpc.unary_unary_rpc_method_handler,
             "clientStream": grpc.stream_unary_rpc_method_handler,
             "serverStream": grpc.unary_stream_rpc_method_handler,
             "biStream": grpc.stream_stream_rpc_method_handler}
    functions = {"sayHello": say_hello, "clientStream": client_stream,
                 "serverStream": server_stream, "biStream": bi_stream}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        name: make(functions[name], request_deserializer=Req.FromString,
                   response_serializer=Reply.SerializeToString)
        for name, make in kinds.items()})])
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [SERVICE, reflection.SERVICE_NAME, "grpc.health.v1.Health"], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"tri://127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(params=["ours", "grpcio"])
def target(request):
    return request.getfixturevalue("ours" if request.param == "ours" else "grpcio_server")


def test_list_and_describe(target):
    done = cli("list", target)
    assert done.returncode == 0, done.stderr
    assert SERVICE in done.stdout.split()
    done = cli("describe", f"{target}/{SERVICE}")
    assert done.returncode == 0, done.stderr
    assert f"service {SERVICE} {{" in done.stdout
    assert (f"rpc serverStream({SERVICE[:-8]}.GreeterRequest) returns "
            f"(stream {SERVICE[:-8]}.GreeterReply);") in done.stdout
    done = cli("describe", f"{target}/{SERVICE[:-8]}.GreeterRequest")
    assert done.returncode == 0, done.stderr
    assert "string name = 1;" in done.stdout


def test_call_every_kind_of_method(target):
    done = cli("call", f"{target}/{SERVICE}/sayHello", '{"name": "x"}', "-H", "x-tag: !")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"message": "hello x!"}), \
        done.stderr
    done = cli("call", f"{target}/{SERVICE}/serverStream", "-d", "@-", stdin='{"name":"s"}')
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == \
        [{"message": f"s {i}"} for i in range(3)]  # one JSON object per line
    done = cli("call", f"{target}/{SERVICE}/clientStream", "-d", "@-",
               stdin='{"name":"a"}\n{"name":"b"}\n')
    assert json.loads(done.stdout) == {"message": "a+b"}, done.stderr
    done = cli("call", f"{target}/{SERVICE}/biStream", "-d", '{"name":"p"} {"name":"q"}')
    assert done.stdout.split() == ['{"message":', '"P"}', '{"message":', '"Q"}'], done.stderr


def test_failed_calls_exit_non_zero_with_the_status_on_stderr(target):
    done = cli("call", f"{target}/{SERVICE}/sayHello", '{"name": "missing"}')
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip() == "NOT_FOUND: no such user"
    done = cli("call", f"{target}/{SERVICE}/sayHello", '{"name": "slow"}', "--timeout", "0.3")
    assert done.returncode == 1 and done.stderr.startswith("DEADLINE_EXCEEDED"), done.stderr
    done = cli("call", f"{target}/{SERVICE}/sayHello", '{"nmae": "typo"}')
    assert done.returncode == 2 and "nmae" in done.stderr
    done = cli("call", f"{target}/{SERVICE}/nope", "{}")
    assert done.returncode == 2 and "no method 'nope'" in done.stderr


def test_health(ours, grpcio_server):
    done = cli("health", ours)
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr
    done = cli("health", ours, "no.such.Service")
    assert done.returncode == 1 and done.stderr.startswith("NOT_FOUND"), done.stderr
    done = cli("health", grpcio_server)
    assert (done.returncode, done.stdout) == (0, "SERVING\n"), done.stderr
    done = cli("health", grpcio_server, SERVICE)
    assert (done.returncode, done.stdout) == (4, "NOT_SERVING\n"), done.stderr


def test_types_from_a_proto_file(ours):
    done = cli("call", f"{ours}/{SERVICE}/sayHello", "--proto", str(PROTO), '{"name": "p"}')
    assert json.loads(done.stdout) == {"message": "hello p"}, done.stderr
    done = cli("describe", f"{ours}/{SERVICE}", "--proto", "greeter.proto",
               "-I", str(PROTO.parent))
    assert done.returncode == 0 and "rpc biStream(stream" in done.stdout, done.stderr


def test_unreachable_and_usage_errors_have_their_own_exit_status():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = cli("call", f"tri://127.0.0.1:{port}/{SERVICE}/sayHello", "{}")
    assert done.returncode == 3 and "cannot connect" in done.stderr
    assert cli("list", "not-a-target").returncode == 2
    assert cli("call", "tri://127.0.0.1:1/NoMethod").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_serve_then_curl_then_ctrl_c():
    process = subprocess.Popen([sys.executable, "-m", "dubbo", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=_env(), preexec_fn=ctrl_c_works)
    try:
        line = process.stdout.readline()  # "serving dubbo.demo.Greeter on 127.0.0.1:PORT ..."
        assert "serving dubbo.demo.Greeter on 127.0.0.1:" in line, process.stderr.read()
        target = "tri://" + line.split(" on ")[1].split()[0]
        port = int(target.rsplit(":", 1)[1])
        done = cli("call", f"{target}/dubbo.demo.Greeter/SayHello", '{"name": "demo"}')
        assert json.loads(done.stdout) == {"message": "hello, demo"}, done.stderr
        done = cli("call", f"{target}/dubbo.demo.Greeter/SayHelloStream", '{"name": "d"}')
        assert len(done.stdout.splitlines()) == 3, done.stderr
        if shutil.which("curl"):
            curl = subprocess.run(
                ["curl", "-sS", "-H", "content-type: application/json", "-d", '{"name":"c"}',
                 f"http://127.0.0.1:{port}/dubbo.demo.Greeter/SayHello"],
                capture_output=True, text=True, timeout=30)
            assert json.loads(curl.stdout) == {"message": "hello, c"}, curl.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)
