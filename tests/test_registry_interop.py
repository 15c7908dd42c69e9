"""Our provider and consumer against PyPI's apache-dubbo 3.0.0b1 through one real
ZooKeeper, each side in its own process (apache-dubbo in its own virtualenv: its
top-level package is also named ``dubbo``)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading

import pytest

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.timeout(120)
def test_an_apache_dubbo_consumer_calls_our_provider(zookeeper, apache_dubbo_python):
    from apache_dubbo import CONSUMER, SERVICE

    def say_hello(request: bytes) -> bytes:
        return b"hello, " + request

    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(say_hello, "sayHello")])
    server = bootstrap.create_server(ServiceConfig(service, host="127.0.0.1", port=0),
                                     unregister_delay=0).start()
    try:
        done = subprocess.run([apache_dubbo_python, "-I", CONSUMER, zookeeper.address, "3", "py"],
                              capture_output=True, timeout=90, env=_env())
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        assert json.loads(done.stdout) == ["hello, py"] * 3
    finally:
        server.stop(grace=1)
        bootstrap.close()


@pytest.mark.timeout(120)
def test_our_consumer_calls_an_apache_dubbo_provider(zookeeper, apache_dubbo_python):
    from apache_dubbo import PROVIDER, SERVICE

    provider = subprocess.Popen([apache_dubbo_python, "-I", PROVIDER, zookeeper.address],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=_env())
    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(zookeeper.url))
    try:
        ready: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: ready.put(provider.stdout.readline()),
                         daemon=True).start()
        line = ready.get(timeout=60).decode()
        assert line.startswith("READY "), line
        with bootstrap.create_client(ReferenceConfig(protocol="tri", service=SERVICE)) as client:
            [endpoint] = client.providers()
            assert endpoint.key == f"127.0.0.1:{int(line.split()[1])}"
            say_hello = client.unary("sayHello")
            assert [say_hello(b"them", timeout=10) for _ in range(3)] == [b"hello, them"] * 3
    finally:
        bootstrap.close()
        if provider.poll() is None:
            provider.stdin.close()
            try:
                provider.wait(20)
            except subprocess.TimeoutExpired:
                provider.kill()
                provider.wait(10)
        provider.stdout.close()
