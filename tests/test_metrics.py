"""Prometheus metrics interceptors: names, labels and values exactly as the
grpc-ecosystem interceptors (go-grpc-prometheus, py-grpc-prometheus) report them."""

from __future__ import annotations

import sys
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import dubbo
from dubbo import RpcError, StatusCode
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.interceptors.metrics import (
    DEFAULT_BUCKETS,
    ClientMetricsInterceptor,
    ServerMetricsInterceptor,
)
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

SERVICE = "test.metrics.Greeter"
LABELS = {"grpc_type", "grpc_service", "grpc_method"}


def say(request):
    return b"hi " + request


def fail(request, context):
    context.abort(StatusCode.NOT_FOUND, "nobody")


def collect(requests):
    return b",".join(requests)


def fan(request):
    yield from request.split(b",")


def chat(requests):
    yield from requests


def ticks(request, context):
    for i in range(250):
        if not context.is_active():
            return
        yield b"%d" % i
        time.sleep(0.02)


HANDLERS = [RpcMethodHandler.unary(say), RpcMethodHandler.unary(fail),
            RpcMethodHandler.client_stream(collect), RpcMethodHandler.server_stream(fan),
            RpcMethodHandler.bi_stream(chat), RpcMethodHandler.server_stream(ticks)]


@pytest.fixture
def rig():
    registry = CollectorRegistry()
    service = RpcServiceHandler(SERVICE, HANDLERS)
    server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=0),
                          interceptors=[ServerMetricsInterceptor(registry=registry)]).start()
    client = dubbo.Client(
        ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"),
        interceptors=[ClientMetricsInterceptor(registry=registry)])
    yield registry, client
    client.close()
    server.stop(grace=1)


def labels(grpc_type: str, method: str, **extra: str) -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method, **extra}


def value(registry, name: str, grpc_type: str, method: str, **extra: str) -> float:
    return registry.get_sample_value(name, labels(grpc_type, method, **extra)) or 0.0


def wait_handled(registry, side: str, count: float, timeout: float = 5.0) -> None:
    """The server counts a call once its status went out: after the client may have it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = sum(s.value for m in registry.collect() if m.name == f"grpc_{side}_handled"
                    for s in m.samples if s.name.endswith("_total"))
        if total >= count:
            return
        time.sleep(0.01)
    pytest.fail(f"grpc_{side}_handled_total did not reach {count}")


def make_calls(client) -> None:
    assert client.unary("say")(b"a", timeout=5) == b"hi a"
    assert client.unary("say")(b"b", timeout=5) == b"hi b"
    with pytest.raises(RpcError):
        client.unary("fail")(b"", timeout=5)
    assert client.client_stream("collect")(iter([b"1", b"2", b"3"]), timeout=5) == b"1,2,3"
    assert list(client.server_stream("fan")(b"x,y,z", timeout=5)) == [b"x", b"y", b"z"]
    assert list(client.bidi_stream("chat")(iter([b"p", b"q"]), timeout=5)) == [b"p", b"q"]


# (grpc_type, method, started, handled code, received, sent) as the server counts them
SERVER_EXPECTED = [
    ("UNARY", "say", 2, "OK", 2, 2),
    ("UNARY", "fail", 1, "NOT_FOUND", 1, 0),
    ("CLIENT_STREAM", "collect", 1, "OK", 3, 1),
    ("SERVER_STREAM", "fan", 1, "OK", 1, 3),
    ("BIDI_STREAM", "chat", 1, "OK", 2, 2),
]


@pytest.mark.parametrize("side", ["server", "client"])
def test_counters_and_histogram_per_method(rig, side):
    registry, client = rig
    make_calls(client)
    wait_handled(registry, side, 6)
    for grpc_type, method, started, code, received, sent in SERVER_EXPECTED:
        if side == "client":  # the client sends what the server receives
            received, sent = sent, received
        assert value(registry, f"grpc_{side}_started_total", grpc_type, method) == started
        assert value(registry, f"grpc_{side}_handled_total", grpc_type, method,
                     grpc_code=code) == started
        assert value(registry, f"grpc_{side}_msg_received_total", grpc_type, method) == \
            received, (method, "received")
        assert value(registry, f"grpc_{side}_msg_sent_total", grpc_type, method) == sent, \
            (method, "sent")
        assert value(registry, f"grpc_{side}_handling_seconds_count", grpc_type,
                     method) == started
        total = value(registry, f"grpc_{side}_handling_seconds_sum", grpc_type, method)
        assert 0 < total < 5 * started
        assert value(registry, f"grpc_{side}_handling_seconds_bucket", grpc_type, method,
                     le="+Inf") == started
    assert value(registry, f"grpc_{side}_handled_total", "UNARY", "say",
                 grpc_code="NOT_FOUND") == 0


def test_metric_names_and_label_sets_are_exactly_go_grpc_prometheus(rig):
    registry, client = rig
    make_calls(client)
    wait_handled(registry, "server", 6)
    families = {m.name: m for m in registry.collect() if m.name.startswith("grpc_")}
    expected = {f"grpc_{side}_{name}" for side in ("server", "client")
                for name in ("started", "handled", "msg_received", "msg_sent",
                             "handling_seconds")}
    assert set(families) == expected
    for name, family in families.items():
        assert family.type == ("histogram" if name.endswith("_seconds") else "counter")
        for sample in family.samples:
            keys = set(sample.labels)
            if name.endswith("_handled"):
                assert keys == LABELS | {"grpc_code"}
            elif sample.name.endswith("_bucket"):
                assert keys == LABELS | {"le"}
            else:
                assert keys == LABELS
            assert sample.labels["grpc_type"] in (
                "UNARY", "CLIENT_STREAM", "SERVER_STREAM", "BIDI_STREAM")
            assert sample.labels["grpc_service"] == SERVICE
    buckets = sorted({float(s.labels["le"]) for s in families["grpc_server_handling_seconds"]
                      .samples if s.name.endswith("_bucket")})
    assert buckets == sorted(DEFAULT_BUCKETS) + [float("inf")]
    text = generate_latest(registry).decode()
    assert ('grpc_server_handled_total{grpc_code="OK",grpc_method="say",'
            f'grpc_service="{SERVICE}",grpc_type="UNARY"}} 2.0') in text
    assert ('grpc_client_started_total{grpc_method="collect",'
            f'grpc_service="{SERVICE}",grpc_type="CLIENT_STREAM"}} 1.0') in text


def test_a_cancelled_stream_is_handled_as_cancelled(rig):
    registry, client = rig
    replies = client.server_stream("ticks")(b"", timeout=10)
    assert next(replies) == b"0"
    replies.cancel()
    wait_handled(registry, "server", 1)
    for side in ("server", "client"):
        assert value(registry, f"grpc_{side}_handled_total", "SERVER_STREAM", "ticks",
                     grpc_code="CANCELLED") == 1
        assert value(registry, f"grpc_{side}_handled_total", "SERVER_STREAM", "ticks",
                     grpc_code="OK") == 0


def test_a_deadline_is_handled_as_deadline_exceeded_by_the_client(rig):
    registry, client = rig
    replies = client.server_stream("ticks")(b"", timeout=0.2)
    with pytest.raises(RpcError) as err:
        list(replies)
    assert err.value.code is StatusCode.DEADLINE_EXCEEDED
    assert value(registry, "grpc_client_handled_total", "SERVER_STREAM", "ticks",
                 grpc_code="DEADLINE_EXCEEDED") == 1
    assert 0.15 < value(registry, "grpc_client_handling_seconds_sum", "SERVER_STREAM",
                        "ticks") < 2


def test_interceptors_on_one_registry_share_their_metrics():
    registry = CollectorRegistry()
    first = ServerMetricsInterceptor(registry=registry)
    second = ServerMetricsInterceptor(registry=registry)
    assert first.metrics is second.metrics
    assert ClientMetricsInterceptor(registry=registry).metrics is not first.metrics
    other = ServerMetricsInterceptor(registry=CollectorRegistry())
    assert other.metrics is not first.metrics


def test_without_prometheus_client_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'dubbo\[prometheus\]'"):
        ServerMetricsInterceptor()
