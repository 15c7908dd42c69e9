"""A provider process for the cluster tests: ``python cluster_provider.py ZK_URL NAME
[PORT]`` serves ``test.Cluster`` (``who`` answers NAME, ``slow`` sleeps the seconds it
is sent) registered in ZooKeeper, prints ``READY PORT``, and on SIGTERM or a closed
stdin stops as a rolling restart does (unregister, wait, drain)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dubbo  # noqa: E402
from dubbo.configs import RegistryConfig, ServiceConfig  # noqa: E402
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler  # noqa: E402

SERVICE = "test.Cluster"


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0

    def who(request: bytes) -> bytes:
        return name.encode()

    def slow(request: bytes) -> bytes:
        time.sleep(float(request or b"0"))
        return name.encode()

    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(who, "who"),
                                          RpcMethodHandler.unary(slow, "slow")])
    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(url))
    server = bootstrap.create_server(ServiceConfig(service, host="127.0.0.1", port=port),
                                     unregister_delay=float(os.environ.get("UNREGISTER_DELAY",
                                                                           "0.5")))
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(f"READY {server.port}", flush=True)
    stop.wait()
    server.stop(grace=5)
    bootstrap.close()


if __name__ == "__main__":
    main()
