"""grpc.health.v1.Health on every dubbo.Server, checked with grpcio-health-checking's
client over a real grpc channel, and with our own dubbo.Client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.services import health as dubbo_health
from dubbo.services.health import ServingStatus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = "org.apache.dubbo.samples.Health"
OTHER = "org.apache.dubbo.samples.Other"
Status = ServingStatus  # same numbers as grpcio's health_pb2.HealthCheckResponse

try:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except Exception as exc:  # its gencode needs a newer protobuf than the oldest we support
    health_pb2 = health_pb2_grpc = None
    WHY = f"grpcio-health-checking does not load on this protobuf: {exc!r}"
# On the oldest protobuf we support, grpcio's health client cannot load: only the tests
# through our own client run there.
needs_grpcio_health = pytest.mark.skipif(health_pb2 is None, reason="grpcio-health-checking")


def _service(name: str = SERVICE, gate: threading.Event | None = None) -> RpcServiceHandler:
    def echo(request: bytes) -> bytes:
        return request

    def slow(request: bytes) -> bytes:
        assert gate is not None
        gate.wait(10)
        return b"done"

    return RpcServiceHandler(name, [RpcMethodHandler.unary(echo), RpcMethodHandler.unary(slow)])


@pytest.fixture
def server() -> Iterator[dubbo.Server]:
    server = dubbo.Server(ServiceConfig(_service(), port=0)).start()
    yield server
    server.stop(grace=1)


@pytest.fixture
def stub(server: dubbo.Server) -> Iterator[health_pb2_grpc.HealthStub]:
    if health_pb2 is None:
        pytest.skip(WHY)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield health_pb2_grpc.HealthStub(channel)


def _check(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _health_client(server: dubbo.Server) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(
        f"tri://127.0.0.1:{server.port}/{dubbo_health.SERVICE_NAME}"))


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- Check ---------------------------------------------------------------------------


def test_grpcio_check_sees_the_server_and_its_services_serving(stub) -> None:
    assert _check(stub, "") == Status.SERVING
    assert _check(stub, SERVICE) == Status.SERVING
    statuses = stub.List(health_pb2.HealthListRequest(), timeout=5).statuses
    assert {name: s.status for name, s in statuses.items()} == {
        "": Status.SERVING, SERVICE: Status.SERVING}


def test_grpcio_check_of_an_unknown_service_is_not_found(stub) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        _check(stub, "no.such.Service")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_set_takes_names_enums_and_grpcio_numbers(server, stub) -> None:
    server.health.set(SERVICE, "NOT_SERVING")
    assert _check(stub, SERVICE) == Status.NOT_SERVING
    server.health.set(SERVICE, ServingStatus.SERVING)
    assert _check(stub, SERVICE) == Status.SERVING
    server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # grpcio's, an int
    assert _check(stub, "") == Status.NOT_SERVING
    server.health.set("new.Service", "serving")
    assert _check(stub, "new.Service") == Status.SERVING
    with pytest.raises(ValueError, match="SERVING"):
        server.health.set(SERVICE, "HEALTHY")
    server.health.clear("new.Service")
    with pytest.raises(grpc.RpcError) as failure:
        _check(stub, "new.Service")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_status_set_before_start_is_kept() -> None:
    server = dubbo.Server(ServiceConfig(_service(), port=0))
    server.health.set(SERVICE, "NOT_SERVING")
    with server, _health_client(server) as client:
        assert dubbo_health.check(client, SERVICE) is ServingStatus.NOT_SERVING
        assert dubbo_health.check(client) is ServingStatus.SERVING


def test_our_client_checks_and_lists(server) -> None:
    with _health_client(server) as client:
        assert dubbo_health.check(client, SERVICE) is ServingStatus.SERVING
        with pytest.raises(dubbo.RpcError) as failure:
            dubbo_health.check(client, "no.such.Service")
        assert failure.value.code == dubbo.StatusCode.NOT_FOUND
        # the message classes, for calls made by hand
        request = dubbo_health.HealthCheckRequest(service="")
        check = client.unary("Check", lambda m: m.SerializeToString(),
                             dubbo_health.HealthCheckResponse.FromString)
        assert check(request, timeout=5).status == ServingStatus.SERVING
        list_call = client.unary("List", lambda m: m.SerializeToString(),
                                 dubbo_health.HealthListResponse.FromString)
        statuses = list_call(dubbo_health.HealthListRequest(), timeout=5).statuses
        assert {name: s.status for name, s in statuses.items()} == {
            "": ServingStatus.SERVING, SERVICE: ServingStatus.SERVING}


@needs_grpcio_health
def test_every_service_served_is_serving_whatever_its_group_or_version() -> None:
    server = dubbo.Server(ServiceConfig(_service(), port=0, version="2.0.0"))
    server.add_service(_service(OTHER), group="blue")
    with server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert _check(stub, SERVICE) == Status.SERVING
        assert _check(stub, OTHER) == Status.SERVING
    # and a client that sends group and version headers still reaches Health
    server = dubbo.Server(ServiceConfig(_service(), port=0))
    with server, dubbo.Client(ReferenceConfig.from_url(
            f"tri://127.0.0.1:{server.port}/{dubbo_health.SERVICE_NAME}"
            "?group=blue&version=9.9.9")) as client:
        assert dubbo_health.check(client) is ServingStatus.SERVING


# -- Watch ---------------------------------------------------------------------------


def test_grpcio_watch_streams_each_change_and_ends_on_cancel(server, stub) -> None:
    replies = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert next(replies).status == Status.SERVING
    server.health.set(SERVICE, "NOT_SERVING")
    assert next(replies).status == Status.NOT_SERVING
    server.health.set(SERVICE, "NOT_SERVING")  # no change, no message
    server.health.set(SERVICE, "SERVING")
    assert next(replies).status == Status.SERVING
    replies.cancel()
    # the watch gave its worker back: nothing of it is still running on the server
    assert _wait_until(lambda: server._active == 0), server._active


def test_grpcio_watch_of_an_unknown_service_waits_for_it(server, stub) -> None:
    replies = stub.Watch(health_pb2.HealthCheckRequest(service="later.Service"), timeout=10)
    assert next(replies).status == Status.SERVICE_UNKNOWN
    server.health.set("later.Service", "SERVING")
    assert next(replies).status == Status.SERVING
    server.health.clear("later.Service")
    assert next(replies).status == Status.SERVICE_UNKNOWN
    replies.cancel()


def test_watch_ends_at_its_deadline(server, stub) -> None:
    replies = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
    assert next(replies).status == Status.SERVING
    with pytest.raises(grpc.RpcError) as failure:
        next(replies)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _wait_until(lambda: server._active == 0), server._active


@needs_grpcio_health
def test_stop_turns_everything_not_serving_before_draining_and_ends_watches() -> None:
    gate = threading.Event()
    server = dubbo.Server(ServiceConfig(_service(gate=gate), port=0)).start()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, \
            ThreadPoolExecutor(2) as pool:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = {name: stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=10)
                   for name in ("", SERVICE)}
        for replies in watches.values():
            assert next(replies).status == Status.SERVING
        # a call in flight keeps the server draining until the gate opens
        slow = pool.submit(channel.unary_unary(f"/{SERVICE}/slow"), b"", timeout=10)
        assert _wait_until(lambda: server._active == 3)
        stopping = pool.submit(server.stop, 10)
        for replies in watches.values():
            assert next(replies).status == Status.NOT_SERVING  # while still draining
            with pytest.raises(StopIteration):  # and the watch ends, OK, by itself
                next(replies)
            assert replies.code() == grpc.StatusCode.OK
        assert not stopping.done() and not slow.done()
        assert server.health.get("") is ServingStatus.NOT_SERVING
        server.health.set("", "SERVING")  # ignored from now on
        assert server.health.get("") is ServingStatus.NOT_SERVING
        gate.set()
        assert slow.result(timeout=10) == b"done"
        stopping.result(timeout=10)


def test_our_client_watches_until_the_server_stops() -> None:
    server = dubbo.Server(ServiceConfig(_service(), port=0)).start()
    try:
        with _health_client(server) as client:
            statuses = dubbo_health.watch(client, SERVICE, timeout=10)
            assert next(statuses) is ServingStatus.SERVING
            started = time.monotonic()
            stopper = threading.Thread(target=server.stop, args=(10,))
            stopper.start()
            assert list(statuses) == [ServingStatus.NOT_SERVING]
            stopper.join(10)
            # the open watch did not hold stop() for its grace period
            assert not stopper.is_alive() and time.monotonic() - started < 5
    finally:
        server.stop(grace=0)


@needs_grpcio_health
def test_watches_are_bounded_by_the_calls_one_connection_may_hold() -> None:
    """Each Watch holds a worker; max_calls_per_connection bounds what one client can
    take, and the other clients are still answered."""
    server = dubbo.Server(ServiceConfig(_service(), port=0), max_calls_per_connection=3)
    with server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        watches = [stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
                   for _ in range(3)]
        for replies in watches:
            assert next(replies).status == Status.SERVING
        extra = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        with pytest.raises(grpc.RpcError) as failure:
            next(extra)
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server._active == 3
        with _health_client(server) as client:  # a connection of its own
            assert dubbo_health.check(client) is ServingStatus.SERVING
        for replies in watches:
            replies.cancel()
        assert _wait_until(lambda: server._active == 0), server._active


# -- the package -----------------------------------------------------------------------


def test_the_shipped_descriptors_are_the_shipped_protos_compiled() -> None:
    from google.protobuf import descriptor_pb2

    from dubbo.services import _descriptors

    pytest.importorskip("grpc_tools.protoc")

    compiled = _descriptors.compile_protos()
    assert sorted(compiled) == sorted(_descriptors.FILES)
    for name, data in compiled.items():
        assert descriptor_pb2.FileDescriptorProto.FromString(_descriptors.FILES[name]) == \
            descriptor_pb2.FileDescriptorProto.FromString(data), (
                f"{name} changed: run python -m dubbo.services._descriptors")


@needs_grpcio_health
def test_our_messages_are_grpcio_health_checkings_on_the_wire() -> None:
    ours = dubbo_health.HealthCheckResponse(status=ServingStatus.NOT_SERVING)
    theirs = health_pb2.HealthCheckResponse.FromString(ours.SerializeToString())
    assert theirs.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert [(s.name, int(s)) for s in ServingStatus] == list(
        health_pb2.HealthCheckResponse.ServingStatus.items())


def test_import_dubbo_and_serving_health_need_no_protobuf_until_a_call() -> None:
    code = (
        "import sys, dubbo\n"
        "from dubbo.configs import ServiceConfig\n"
        "from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler\n"
        "s = RpcServiceHandler('x.Y', [RpcMethodHandler.unary(len, 'f')])\n"
        "server = dubbo.Server(ServiceConfig(s, port=0), reflection=True).start()\n"
        "server.health.set('x.Y', 'NOT_SERVING')\n"
        "server.stop()\n"
        "print(sorted(m for m in sys.modules if m.startswith('google')))\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@needs_grpcio_health
def test_the_registry_gets_only_the_users_services(zookeeper) -> None:
    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    server = boot.create_server(ServiceConfig(_service(), port=0), unregister_delay=0,
                                reflection=True).start()
    try:
        zk = zookeeper.client()
        assert zk.get_children("/dubbo") == [SERVICE]
        assert len(zk.get_children(f"/dubbo/{SERVICE}/providers")) == 1
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert _check(health_pb2_grpc.HealthStub(channel), SERVICE) == Status.SERVING
    finally:
        server.stop(grace=1)
        boot.close()
    assert server.health.get(SERVICE) is ServingStatus.NOT_SERVING
