"""Service discovery on a real ZooKeeper: providers register, consumers find them, calls
are balanced and survive providers dying, restarting and ZooKeeper going away
(issue 8). Providers that must die for real run as processes (tests/cluster_provider.py)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import dubbo
from dubbo.configs import ApplicationConfig, ReferenceConfig, RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.registry.url import RegistryURL, parse_node

SERVICE = "test.Cluster"
PROVIDER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cluster_provider.py")


# -- helpers -------------------------------------------------------------------------------


class ProviderProcess:
    """A provider in a process of its own, so that it can be killed for real."""

    def __init__(self, zk_url: str, name: str, unregister_delay: float = 0.5) -> None:
        self.name = name
        env = dict(os.environ, UNREGISTER_DELAY=str(unregister_delay))
        self.process = subprocess.Popen([sys.executable, PROVIDER_SCRIPT, zk_url, name],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("READY"):
            self.kill()
            raise RuntimeError(f"provider {name} did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        """Graceful, as a rolling restart does: unregister, wait, drain."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)
        self._close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


class Load:
    """``threads`` callers of ``who`` until stopped (bounded by ``max_seconds``),
    counting replies per provider and every failure."""

    def __init__(self, client: dubbo.Client, threads: int = 8, max_seconds: float = 60.0,
                 method: str = "who") -> None:
        self.call = client.unary(method)
        self.replies: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()  # guards replies, failures, last
        self.last: dict[str, float] = {}  # provider -> when it last answered
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self) -> None:
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            try:
                who = self.call(b"", timeout=5).decode()
            except dubbo.RpcError as exc:
                with self.lock:
                    self.failures.append(f"{exc.code.name}: {exc.details}")
                continue
            with self.lock:
                self.replies[who] += 1
                self.last[who] = time.monotonic()

    def snapshot(self) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter(self.replies)

    def wait_for(self, name: str, since: float, timeout: float) -> float | None:
        """Seconds after ``since`` at which ``name`` answered, or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                at = self.last.get(name)
            if at is not None and at >= since:
                return at - since
            time.sleep(0.02)
        return None


def _service(name: str = SERVICE, reply: bytes = b"x") -> RpcServiceHandler:
    def who(request: bytes) -> bytes:
        return reply

    def slow(request: bytes) -> bytes:
        time.sleep(float(request or b"0"))
        return reply

    return RpcServiceHandler(name, [RpcMethodHandler.unary(who, "who"),
                                    RpcMethodHandler.unary(slow, "slow")])


@pytest.fixture
def cluster(zookeeper):
    """Starts providers and clients on the test's ZooKeeper; all stopped at teardown."""
    servers: list[dubbo.Server] = []
    clients: list[dubbo.Client] = []
    processes: list[ProviderProcess] = []
    bootstraps: list[dubbo.Dubbo] = []

    class Cluster:
        zk = zookeeper

        @staticmethod
        def bootstrap() -> dubbo.Dubbo:
            boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
            bootstraps.append(boot)
            return boot

        @classmethod
        def serve(cls, reply: bytes, **config: object) -> dubbo.Server:
            host = str(config.pop("host", "127.0.0.1"))
            server = cls.bootstrap().create_server(
                ServiceConfig(_service(reply=reply), host=host, port=0, **config),
                unregister_delay=0.2).start()
            servers.append(server)
            return server

        @classmethod
        def client(cls, **reference: object) -> dubbo.Client:
            client = cls.bootstrap().create_client(
                ReferenceConfig(protocol="tri", service=SERVICE, **reference))
            clients.append(client)
            return client

        @staticmethod
        def process(name: str) -> ProviderProcess:
            provider = ProviderProcess(zookeeper.url, name)
            processes.append(provider)
            return provider

    yield Cluster
    for client in clients:
        client.close()
    for server in servers:
        server.stop(grace=1)
    for process in processes:
        process.kill()
    for boot in bootstraps:
        boot.close()


def _providers(zk, service: str = SERVICE) -> list[RegistryURL]:
    client = zk.client()
    children = client.get_children(f"/dubbo/{service}/providers")
    return [url for url in map(parse_node, children) if url is not None]


def _wait(predicate, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# -- providers -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_provider_registers_an_ephemeral_node_as_java_lays_it_out(cluster):
    server = cluster.serve(b"a", version="1.0.0", group="g", weight=7)
    zk = cluster.zk.client()
    folder = f"/dubbo/{SERVICE}/providers"
    [name] = zk.get_children(folder)
    url = parse_node(name)
    assert url is not None and (url.host, url.port) == ("127.0.0.1", server.port)
    text = url.to_string()
    keys = [pair.split("=")[0] for pair in text.split("?", 1)[1].split("&")]
    assert keys == sorted(keys)
    params = url.params
    assert params["interface"] == SERVICE and params["side"] == "provider"
    assert params["methods"] == "slow,who"
    assert (params["version"], params["group"], params["weight"]) == ("1.0.0", "g", "7")
    for key in ("application", "timestamp", "pid", "release", "dynamic"):
        assert params[key]
    _, stat = zk.get(f"{folder}/{name}")
    assert stat.ephemeralOwner != 0
    server.stop(grace=1)
    assert zk.get_children(folder) == []  # unregistered before it stopped


@pytest.mark.timeout(60)
def test_a_provider_bound_to_every_interface_advertises_a_reachable_host(cluster):
    cluster.serve(b"a", host="0.0.0.0")
    [url] = _providers(cluster.zk)
    assert url.host not in ("0.0.0.0", "", "::")


@pytest.mark.timeout(60)
def test_consumers_call_only_matching_providers_and_register_themselves(cluster):
    cluster.serve(b"plain")
    cluster.serve(b"v1", version="1.0.0")
    cluster.serve(b"v2", version="2.0.0")
    plain = cluster.client().unary("who")
    v1 = cluster.client(version="1.0.0").unary("who")
    assert {plain(b"") for _ in range(20)} == {b"plain"}
    assert {v1(b"") for _ in range(20)} == {b"v1"}
    consumers = cluster.zk.client().get_children(f"/dubbo/{SERVICE}/consumers")
    assert len(consumers) == 2
    assert all("side%3Dconsumer" in name for name in consumers)


@pytest.mark.timeout(60)
def test_a_consumer_with_no_provider_fails_clearly(cluster):
    client = cluster.client(version="9.9.9")
    with pytest.raises(dubbo.RpcError) as info:
        client.unary("who")(b"", timeout=2)
    assert info.value.code == dubbo.StatusCode.UNAVAILABLE
    assert "no provider of test.Cluster" in info.value.details


@pytest.mark.timeout(60)
def test_a_node_written_by_dubbo_java_is_called(cluster):
    # A plain server, registered by hand the way Dubbo Java writes its node.
    server = dubbo.Server(ServiceConfig(_service(reply=b"java"), host="127.0.0.1",
                                        port=0)).start()
    try:
        java_url = (f"tri://127.0.0.1:{server.port}/{SERVICE}?application=java-provider"
                    f"&deprecated=false&dubbo=2.0.2&dynamic=true&generic=false"
                    f"&interface={SERVICE}&methods=slow,who&prefer.serialization=fastjson2,"
                    f"hessian2&release=3.3.0&service-name-mapping=true&side=provider"
                    f"&timestamp=1706775452118")
        from dubbo.registry.url import java_encode

        cluster.zk.client().create(f"/dubbo/{SERVICE}/providers/{java_encode(java_url)}",
                                   b"", makepath=True, ephemeral=True)
        assert cluster.client().unary("who")(b"", timeout=5) == b"java"
    finally:
        server.stop(grace=1)


# -- failures ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_kill_9_of_a_provider_loses_no_call_with_failover(cluster):
    providers = [cluster.process(name) for name in ("p1", "p2", "p3")]
    client = cluster.client()  # failover, 2 retries: Dubbo's default
    assert _wait(lambda: len(client.providers()) == 3, 10)
    with Load(client) as load:
        time.sleep(1.5)
        before = load.snapshot()
        assert set(before) == {"p1", "p2", "p3"}
        providers[0].kill()
        killed_at = time.monotonic()
        time.sleep(3)
        assert load.wait_for("p2", killed_at, 5) is not None
        assert load.wait_for("p3", killed_at, 5) is not None
    assert load.failures == []
    assert sum(load.snapshot().values()) > sum(before.values())


@pytest.mark.timeout(180)
def test_a_rolling_restart_loses_no_call_even_with_failfast(cluster):
    providers = [cluster.process(name) for name in ("a1", "b1", "c1")]
    client = cluster.client(cluster="failfast")
    assert _wait(lambda: len(client.providers()) == 3, 10)
    with Load(client) as load:
        time.sleep(1)
        for index, old in enumerate(list(providers)):
            old.stop()  # unregisters, waits, drains
            replacement = cluster.process(old.name[0] + "2")
            providers[index] = replacement
            started = time.monotonic()
            assert load.wait_for(replacement.name, started, 3) is not None, \
                f"{replacement.name} got no call within 3 s of registering"
        time.sleep(0.5)
    assert load.failures == []
    assert {"a2", "b2", "c2"} <= set(load.snapshot())


@pytest.mark.timeout(60)
def test_a_provider_that_refuses_connections_is_set_aside_at_once(cluster):
    live = cluster.serve(b"live")
    # A node pointing at a port nobody listens on (a provider that died unnoticed).
    dead = RegistryURL("tri", "127.0.0.1", _dead_port(), SERVICE,
                       {"interface": SERVICE, "side": "provider"})
    cluster.zk.client().create(f"/dubbo/{SERVICE}/providers/{dead.node_name()}", b"",
                               makepath=True, ephemeral=True)
    client = cluster.client(cluster="failfast", load_balance="roundrobin")
    assert _wait(lambda: len(client.providers()) == 2, 5)
    who = client.unary("who")
    failures = 0
    for _ in range(50):
        try:
            assert who(b"", timeout=2) == b"live"
        except dubbo.RpcError as exc:
            assert exc.code == dubbo.StatusCode.UNAVAILABLE
            failures += 1
    assert failures <= 2  # the first connect fails; then it is skipped while backing off
    assert live.port


def _dead_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(120)
def test_calls_go_on_while_zookeeper_is_down_and_nodes_come_back(own_zookeeper):
    boot_servers = dubbo.Dubbo(registry_config=RegistryConfig.from_url(own_zookeeper.url))
    boot_client = dubbo.Dubbo(registry_config=RegistryConfig.from_url(own_zookeeper.url))
    servers = [boot_servers.create_server(ServiceConfig(_service(reply=name), host="127.0.0.1",
                                                        port=0), unregister_delay=0).start()
               for name in (b"z1", b"z2")]
    client = boot_client.create_client(ReferenceConfig(protocol="tri", service=SERVICE))
    try:
        with Load(client, threads=4) as load:
            time.sleep(0.5)
            before = sum(load.snapshot().values())
            down = threading.Thread(target=own_zookeeper.server.restart,
                                    kwargs={"down_seconds": 10})
            down.start()
            time.sleep(5)  # ZooKeeper is down now
            during = sum(load.snapshot().values())
            down.join(60)
            assert during > before  # calls never stopped
            zk = own_zookeeper.client(timeout=20)
            assert _wait(lambda: len(zk.get_children(f"/dubbo/{SERVICE}/providers")) == 2, 30)
            after = sum(load.snapshot().values())
            time.sleep(0.5)
            assert sum(load.snapshot().values()) > after
        assert load.failures == []
    finally:
        client.close()
        for server in servers:
            server.stop(grace=1)
        boot_client.close()
        boot_servers.close()


@pytest.mark.timeout(60)
def test_an_expired_session_registers_its_providers_again(cluster):
    from kazoo.client import KazooClient

    boot = cluster.bootstrap()
    server = boot.create_server(ServiceConfig(_service(reply=b"e"), host="127.0.0.1", port=0),
                                unregister_delay=0).start()
    try:
        zk = cluster.zk.client()
        folder = f"/dubbo/{SERVICE}/providers"
        assert len(zk.get_children(folder)) == 1
        # Expire the provider's session the way ZooKeeper's own tests do: a second
        # client takes the session over and closes it.
        session_id, password = boot._registry._zk.client_id
        thief = KazooClient(hosts=cluster.zk.address, client_id=(session_id, password))
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        assert _wait(lambda: len(zk.get_children(folder)) == 1, 20)
        assert _wait(lambda: zk.get(f"{folder}/{zk.get_children(folder)[0]}")[1]
                     .ephemeralOwner != session_id, 20)
    finally:
        server.stop(grace=1)


# -- balancing -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_weights_are_honoured_by_random(cluster):
    for reply, weight in ((b"w1", 100), (b"w2", 200), (b"w3", 300)):
        cluster.serve(reply, weight=weight)
    who = cluster.client().unary("who")
    counts = collections.Counter(who(b"") for _ in range(1200))
    assert 0.10 < counts[b"w1"] / 1200 < 0.24
    assert 0.24 < counts[b"w2"] / 1200 < 0.42
    assert 0.40 < counts[b"w3"] / 1200 < 0.60


@pytest.mark.timeout(60)
def test_round_robin_is_even(cluster):
    for reply in (b"r1", b"r2", b"r3"):
        cluster.serve(reply)
    who = cluster.client(load_balance="roundrobin").unary("who")
    counts = collections.Counter(who(b"") for _ in range(300))
    assert sorted(counts.values()) == [100, 100, 100]


@pytest.mark.timeout(60)
def test_least_active_prefers_the_idle_provider(cluster):
    for reply in (b"l1", b"l2", b"l3"):
        cluster.serve(reply)
    client = cluster.client(load_balance="leastactive")
    slow, who = client.unary("slow"), client.unary("who")
    # Two long calls keep two providers busy; every quick call goes to the third.
    busy = [threading.Thread(target=slow, args=(b"2",), kwargs={"timeout": 10})
            for _ in range(2)]
    for thread in busy:
        thread.start()
        time.sleep(0.2)
    busy_names = {e.key for e in client.providers() if e.active}
    assert len(busy_names) == 2
    replies = {who(b"", timeout=5) for _ in range(20)}
    for thread in busy:
        thread.join(10)
    assert len(replies) == 1


@pytest.mark.timeout(60)
def test_consistent_hash_is_stable_per_request(cluster):
    for reply in (b"c1", b"c2", b"c3"):
        cluster.serve(reply)
    who = cluster.client(load_balance="consistenthash").unary("who")
    seen = {key: {who(key) for _ in range(5)} for key in (b"alice", b"bob", b"carol", b"dave")}
    assert all(len(replies) == 1 for replies in seen.values())


@pytest.mark.timeout(60)
def test_a_static_list_is_balanced_and_fails_over_without_a_registry(cluster):
    one = dubbo.Server(ServiceConfig(_service(reply=b"s1"), host="127.0.0.1", port=0)).start()
    two = dubbo.Server(ServiceConfig(_service(reply=b"s2"), host="127.0.0.1", port=0)).start()
    try:
        ref = ReferenceConfig.from_url(
            f"tri://127.0.0.1:{one.port},127.0.0.1:{two.port},127.0.0.1:{_dead_port()}"
            f"/{SERVICE}?loadbalance=roundrobin")
        with dubbo.Client(ref) as client:
            who = client.unary("who")
            replies = collections.Counter(who(b"", timeout=5) for _ in range(60))
        assert set(replies) == {b"s1", b"s2"}  # the dead one fails over, never fails
    finally:
        one.stop(grace=1)
        two.stop(grace=1)


# -- scale ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_fifty_providers_of_twenty_services_and_a_flapping_one(cluster):
    zk = cluster.zk.client()
    services = [f"test.Scale{i}" for i in range(20)]
    for service in services:
        for index in range(50):
            url = RegistryURL("tri", f"127.0.0.{1 + index // 250}", 20000 + index, service,
                              {"interface": service, "side": "provider"})
            zk.create(f"/dubbo/{service}/providers/{url.node_name()}", b"", makepath=True)
    boot = cluster.bootstrap()
    started = time.monotonic()
    client = boot.create_client(ReferenceConfig(protocol="tri", service=services[7]))
    took = time.monotonic() - started
    try:
        assert took < 1.0, f"create_client took {took:.2f}s"
        assert len(client.providers()) == 50
        flapper = RegistryURL("tri", "127.0.0.9", 29999, services[7],
                              {"interface": services[7], "side": "provider"})
        path = f"/dubbo/{services[7]}/providers/{flapper.node_name()}"
        for _ in range(100):
            zk.create(path, b"")
            zk.delete(path)
        assert _wait(lambda: len(client.providers()) == 50, 10)
        zk.create(path, b"")
        assert _wait(lambda: len(client.providers()) == 51, 10)
        assert "127.0.0.9:29999" in {e.key for e in client.providers()}
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_the_registry_url_sets_the_root_folder_the_balancer_and_the_version(zookeeper):
    url = f"{zookeeper.url}?group=myroot&loadbalance=roundrobin&version=3.0"
    servers = []
    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(url))
    try:
        for reply in (b"g1", b"g2"):
            servers.append(boot.create_server(ServiceConfig(_service(reply=reply),
                                                            host="127.0.0.1", port=0),
                                              unregister_delay=0).start())
        [name, _] = zookeeper.client().get_children(f"/myroot/{SERVICE}/providers")
        assert parse_node(name).version == "3.0"
        with boot.create_client(ReferenceConfig(protocol="tri", service=SERVICE)) as client:
            assert client.balancer.name == "roundrobin"
            who = client.unary("who")
            assert collections.Counter(who(b"") for _ in range(10)) == {b"g1": 5, b"g2": 5}
    finally:
        for server in servers:
            server.stop(grace=1)
        boot.close()


@pytest.mark.timeout(60)
def test_the_application_config_is_written_into_provider_and_consumer_nodes(zookeeper):
    app = ApplicationConfig(name="shop", version="2.1", owner="alice", organization="acme",
                            environment="test")
    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url),
                       application_config=app)
    server = boot.create_server(ServiceConfig(_service(), host="127.0.0.1", port=0),
                                unregister_delay=0).start()
    try:
        with boot.create_client(ReferenceConfig(protocol="tri", service=SERVICE)):
            zk = zookeeper.client()
            for folder in ("providers", "consumers"):
                [name] = zk.get_children(f"/dubbo/{SERVICE}/{folder}")
                params = parse_node(name).params
                assert {k: params.get(k) for k in ("application", "application.version",
                                                   "owner", "organization", "environment")} \
                    == {"application": "shop", "application.version": "2.1", "owner": "alice",
                        "organization": "acme", "environment": "test"}, folder
                assert "architecture" not in params  # fields left unset are not written
    finally:
        server.stop(grace=1)
        boot.close()


@pytest.mark.timeout(60)
def test_a_provider_that_leaves_has_its_connection_closed(cluster):
    stay = cluster.serve(b"stay")
    leave = cluster.serve(b"leave")
    client = cluster.client(load_balance="roundrobin")
    who = client.unary("who")
    assert {who(b"") for _ in range(4)} == {b"stay", b"leave"}
    assert _wait(lambda: len(leave._connections) == 1, 5)
    # Its node goes (an operator removed it); the process itself keeps serving.
    zk = cluster.zk.client()
    folder = f"/dubbo/{SERVICE}/providers"
    for name in zk.get_children(folder):
        if parse_node(name).port == leave.port:
            zk.delete(f"{folder}/{name}")
    assert _wait(lambda: len(client.providers()) == 1, 5)
    assert _wait(lambda: len(leave._connections) == 0, 5)  # the client let go of it
    assert {who(b"") for _ in range(4)} == {b"stay"}
    assert len(stay._connections) == 1


@pytest.mark.timeout(60)
def test_failover_retries_any_failure_only_for_idempotent_methods(cluster):
    def flaky_service(reply: bytes, fail: bool) -> RpcServiceHandler:
        def who(request: bytes) -> bytes:
            if fail:
                raise dubbo.RpcError(dubbo.StatusCode.INTERNAL, "broken provider")
            return reply

        return RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(who, "who")])

    boot = cluster.bootstrap()
    servers = [boot.create_server(ServiceConfig(flaky_service(b"ok", fail), host="127.0.0.1",
                                                port=0), unregister_delay=0).start()
               for fail in (True, False)]
    try:
        client = cluster.client(load_balance="roundrobin")
        plain = client.unary("who")
        idempotent = client.unary("who", idempotent=True)
        plain_results = []
        for _ in range(4):
            try:
                plain_results.append(plain(b"", timeout=5))
            except dubbo.RpcError as exc:
                plain_results.append(exc.code)
        assert dubbo.StatusCode.INTERNAL in plain_results  # not retried: may not be safe
        assert [idempotent(b"", timeout=5) for _ in range(6)] == [b"ok"] * 6
    finally:
        for server in servers:
            server.stop(grace=1)


@pytest.mark.timeout(60)
def test_failsafe_returns_none_and_forking_asks_two_providers(cluster):
    served: collections.Counter[bytes] = collections.Counter()
    lock = threading.Lock()

    def counting(reply: bytes) -> RpcServiceHandler:
        def who(request: bytes) -> bytes:
            with lock:
                served[reply] += 1
            if request == b"fail":
                raise dubbo.RpcError(dubbo.StatusCode.INTERNAL, "asked to fail")
            if request == b"slow":  # both forks arrive before either answers
                time.sleep(0.3)
            return reply

        return RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(who, "who")])

    boot = cluster.bootstrap()
    servers = [boot.create_server(ServiceConfig(counting(reply), host="127.0.0.1", port=0),
                                  unregister_delay=0).start() for reply in (b"f1", b"f2")]
    try:
        failsafe = cluster.client(cluster="failsafe").unary("who")
        assert failsafe(b"fail", timeout=5) is None
        assert failsafe(b"", timeout=5) in (b"f1", b"f2")
        served.clear()
        forking = cluster.client(cluster="forking").unary("who")
        assert forking(b"slow", timeout=5) in (b"f1", b"f2")
        assert _wait(lambda: served == {b"f1": 1, b"f2": 1}, 5)  # one call, both asked
        with pytest.raises(dubbo.RpcError) as info:
            forking(b"fail", timeout=5)
        assert info.value.code == dubbo.StatusCode.INTERNAL
    finally:
        for server in servers:
            server.stop(grace=1)


@pytest.mark.timeout(90)
def test_registering_while_zookeeper_is_away_fails_in_the_connect_timeout(own_zookeeper):
    boot = dubbo.Dubbo(registry_config=RegistryConfig.from_url(f"{own_zookeeper.url}?timeout=1000"))
    first = boot.create_server(ServiceConfig(_service(reply=b"1"), host="127.0.0.1", port=0),
                               unregister_delay=0).start()  # the session is open
    try:
        own_zookeeper.server.stop()
        second = boot.create_server(ServiceConfig(_service(reply=b"2"), host="127.0.0.1",
                                                  port=0), unregister_delay=0)
        started = time.monotonic()
        with pytest.raises(dubbo.RpcError) as info:
            second.start()
        assert info.value.code == dubbo.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 5  # not until ZooKeeper is back
        assert not second._connections  # it did not stay up half started
    finally:
        own_zookeeper.server.start()
        first.stop(grace=1)
        boot.close()
