"""An apache-dubbo 3.0.0b1 consumer that finds its provider in ZooKeeper (run with its
virtualenv).

    <apache-dubbo venv>/bin/python -I consumer.py ZK_HOST:ZK_PORT [N [REQUEST]]

Looks up ``org.apache.dubbo.samples.registry.Greeter`` through
``dubbo.Dubbo(registry_config=...).create_client(ReferenceConfig(...))``, calls its
unary ``sayHello`` N times (default 3) with REQUEST (default ``world``) and prints the
replies as a JSON list of strings, then exits 0. A failed call prints the error on
stderr and exits 1 (also when create_client fails: apache-dubbo connects to every
provider listed at once and gives up if one is unreachable); if the calls have not
ended within 60 s (apache-dubbo's calls take no timeout) it exits 2.

apache-dubbo's consumer watches the providers folder with a kazoo ChildrenWatch,
which gives up for good if the folder does not exist yet: start it after a provider
has registered.
"""

import json
import os
import sys
import threading

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig

SERVICE = "org.apache.dubbo.samples.registry.Greeter"
DEADLINE = 60.0  # seconds for the whole run


def give_up() -> None:
    print(f"calls did not end within {DEADLINE:.0f} s", file=sys.stderr, flush=True)
    os._exit(2)


def main() -> None:
    watchdog = threading.Timer(DEADLINE, give_up)
    watchdog.daemon = True
    watchdog.start()
    zookeeper = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    request = (sys.argv[3] if len(sys.argv) > 3 else "world").encode("utf-8")
    registry = RegistryConfig.from_url(f"zookeeper://{zookeeper}")
    replies: list[str] = []
    try:
        bootstrap = dubbo.Dubbo(registry_config=registry)
        # Connects to every provider listed, and raises if any one cannot be reached.
        client = bootstrap.create_client(ReferenceConfig(protocol="tri", service=SERVICE))
        say_hello = client.unary("sayHello")
        for _ in range(count):
            replies.append(say_hello(request).decode("utf-8", "backslashreplace"))
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        step = f"call {len(replies) + 1} of {count}" if "say_hello" in locals() else "create_client"
        print(f"{step} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    print(json.dumps(replies), flush=True)
    os._exit(0)  # apache-dubbo's event loop and kazoo threads are not daemons


if __name__ == "__main__":
    main()
