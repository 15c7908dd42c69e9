"""Regression tests for bugs found in review (loopback only, each bounded in time)."""

from __future__ import annotations

import queue
import threading
import time

import pytest

import dubbo
from dubbo.configs import ReferenceConfig
from dubbo.proxy.handlers import RpcMethodHandler

SERVICE = "review.Findings"


def _greet_first(request_iterator):
    """A bidi handler that speaks first, then echoes."""
    yield b"hello"
    yield from request_iterator


def _ping(request: bytes) -> bytes:
    return request


@pytest.mark.timeout(30)
def test_bidi_call_on_a_warm_connection_sends_its_headers_before_the_first_request(
        serve_dubbo):
    """A streaming call whose requests come later (here: after the server's greeting)
    must still reach the server: its HEADERS may not wait in h2 for the first message."""
    server = serve_dubbo(SERVICE, RpcMethodHandler.bi_stream(_greet_first, "chat"),
                         RpcMethodHandler.unary(_ping, "ping"))
    requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def later() -> object:
        while (item := requests.get(timeout=10)) is not None:
            yield item

    with dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}")) \
            as client:
        assert client.unary("ping")(b"warm", timeout=5) == b"warm"  # the connection is up
        replies = client.bidi_stream("chat")(later(), timeout=5)
        try:
            assert next(replies) == b"hello"
            requests.put(b"x")
            assert next(replies) == b"x"
        finally:
            requests.put(None)
        assert list(replies) == []


@pytest.mark.timeout(30)
def test_forking_with_invalid_metadata_raises_instead_of_hanging(serve_dubbo):
    """With ``cluster=forking`` a call that cannot even be started (bad metadata) must
    fail as it does with any other cluster, not leave the caller waiting forever."""
    first = serve_dubbo(SERVICE, RpcMethodHandler.unary(_ping, "ping"))
    second = serve_dubbo(SERVICE, RpcMethodHandler.unary(_ping, "ping"))
    url = f"tri://127.0.0.1:{first.port},127.0.0.1:{second.port}/{SERVICE}?cluster=forking"
    with dubbo.Client(ReferenceConfig.from_url(url)) as client:
        ping = client.unary("ping")
        assert ping(b"a", timeout=5) == b"a"
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                ping(b"a", timeout=5, metadata=[("bad key", "v")])
            except BaseException as exc:  # noqa: BLE001 - what the caller sees
                outcome.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        started = time.monotonic()
        caller.start()
        caller.join(8)
        assert not caller.is_alive(), "the forking call hung"
        assert time.monotonic() - started < 8
        assert len(outcome) == 1 and isinstance(outcome[0], ValueError)


@pytest.mark.timeout(90)
def test_a_provider_and_a_consumer_stop_while_zookeeper_is_down(own_zookeeper):
    """stop() and close() unregister first; with ZooKeeper down, kazoo queues the
    delete until it is back: that wait must be bounded, not hold stop() forever."""
    from dubbo.configs import RegistryConfig, ServiceConfig
    from dubbo.proxy.handlers import RpcServiceHandler

    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(own_zookeeper.url))
    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(_ping, "ping")])
    server = boot.create_server(ServiceConfig(service, host="127.0.0.1", port=0),
                                unregister_delay=0).start()
    client = boot.create_client(ReferenceConfig(protocol="tri", service=SERVICE))
    assert client.unary("ping")(b"up", timeout=5) == b"up"
    own_zookeeper.server.stop()
    time.sleep(1)  # kazoo notices: the session is suspended, not expired
    timings: dict[str, float] = {}

    def shut_down() -> None:
        for name, step in (("client.close", client.close),
                           ("server.stop", lambda: server.stop(grace=0)),
                           ("boot.close", boot.close)):
            started = time.monotonic()
            step()
            timings[name] = time.monotonic() - started

    stopper = threading.Thread(target=shut_down, daemon=True)
    stopper.start()
    stopper.join(40)
    alive = stopper.is_alive()
    if alive:  # let the thread finish so that the test leaves nothing behind
        own_zookeeper.server.start()
        stopper.join(30)
    assert not alive, f"shutting down hung while ZooKeeper was down: {timings}"
    assert timings["client.close"] < 15 and timings["server.stop"] < 15, timings


def _provider_nodes(zk, service: str) -> list[str]:
    folder = f"/dubbo/{service}/providers"
    return zk.get_children(folder) if zk.exists(folder) else []


@pytest.mark.timeout(60)
def test_a_server_whose_registration_fails_leaves_no_node_behind(zookeeper, monkeypatch):
    """start() registers service after service; if one fails, those already written
    must go too: no consumer may be sent to a server that did not start."""
    from dubbo.configs import RegistryConfig, ServiceConfig
    from dubbo.proxy.handlers import RpcServiceHandler
    from dubbo.registry.zookeeper import ZookeeperRegistry

    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    first = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(_ping, "ping")])
    second = RpcServiceHandler(SERVICE + "2", [RpcMethodHandler.unary(_ping, "ping")])
    server = boot.create_server(ServiceConfig(first, host="127.0.0.1", port=0),
                                unregister_delay=0)
    server.add_service(second)
    register = ZookeeperRegistry.register
    calls = []

    def fail_the_second(self, url, category="providers"):
        calls.append(url)
        if len(calls) == 2:
            raise RuntimeError("registry refused")
        return register(self, url, category)

    monkeypatch.setattr(ZookeeperRegistry, "register", fail_the_second)
    try:
        with pytest.raises(RuntimeError):
            server.start()
        assert len(calls) == 2
        assert _provider_nodes(zookeeper.client(), SERVICE) == []
        assert boot._registry is None  # the session it opened for start() is over
    finally:
        server.stop(grace=0)
        boot.close()


@pytest.mark.timeout(60)
def test_closing_the_bootstrap_early_does_not_unbalance_its_session_count(zookeeper):
    """Dubbo.close() may come before its servers stop (its docstring allows it); those
    late releases must not count against the next session, or that session ends while
    a client still follows it."""
    from dubbo.configs import RegistryConfig, ServiceConfig
    from dubbo.proxy.handlers import RpcServiceHandler

    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(_ping, "ping")])
    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    early = boot.create_server(ServiceConfig(service, host="127.0.0.1", port=0),
                               unregister_delay=0).start()
    boot.close()
    early.stop(grace=0)  # releases a session that is already gone
    first = boot.create_client(ReferenceConfig(protocol="tri", service=SERVICE))
    second = boot.create_client(ReferenceConfig(protocol="tri", service=SERVICE))
    other = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    provider = None
    try:
        first.close()  # the second client still follows the registry
        provider = other.create_server(ServiceConfig(service, host="127.0.0.1", port=0),
                                       unregister_delay=0).start()
        end = time.monotonic() + 10
        while not second.providers() and time.monotonic() < end:
            time.sleep(0.05)
        assert [e.port for e in second.providers()] == [provider.port]
    finally:
        second.close()
        if provider is not None:
            provider.stop(grace=0)
        other.close()
        boot.close()


@pytest.mark.timeout(30)
def test_a_provider_leaving_while_a_call_starts_on_its_connection_is_unavailable():
    """A call that got the connection of a provider which then left (here while its
    TLS handshake is pending) never sent a byte: it fails UNAVAILABLE, which failover
    retries elsewhere, never CANCELLED as if the caller had cancelled it."""
    import socket
    import ssl

    from dubbo.client.client import ClientCall
    from dubbo.wire.deadline import Deadline

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the TCP connect; nobody answers TLS
        port = silent.getsockname()[1]
        client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                              ssl_context=ssl.create_default_context(), connect_timeout=20)
        try:
            connection = client.providers()[0].connection()  # what _start does first
            time.sleep(0.3)  # its loop has taken it up: the TLS handshake is under way
            client.set_providers([])  # ... then the provider leaves the registry
            connection.join(5)
            assert connection.closed
            with pytest.raises(dubbo.RpcError) as info:
                connection.open_stream(ClientCall(connection, Deadline.after(1), None), [])
        finally:
            client.close()
    assert info.value.code == dubbo.StatusCode.UNAVAILABLE, info.value
