"""A consumer that finds its providers in ZooKeeper and spreads calls over them.

    python samples/registry/consumer.py [CALLS]

Start one or more provider.py first. Calls go round-robin over the providers listed
under /dubbo/org.apache.dubbo.samples.registry.Greeter/providers; a provider that dies
is skipped (failover retries the call on another one).
"""

import collections
import os
import sys

import dubbo
from dubbo.configs import ReferenceConfig, RegistryConfig

SERVICE = "org.apache.dubbo.samples.registry.Greeter"
ZOOKEEPER = os.environ.get("ZOOKEEPER", "127.0.0.1:2181")

if __name__ == "__main__":
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    bootstrap = dubbo.Dubbo(registry_config=RegistryConfig.from_url(f"zookeeper://{ZOOKEEPER}"))
    reference = ReferenceConfig(protocol="tri", service=SERVICE, load_balance="roundrobin")
    with bootstrap.create_client(reference) as client:
        print("providers:", ", ".join(sorted(e.key for e in client.providers())))
        say_hello = client.unary("sayHello")
        served_by = collections.Counter()
        for i in range(calls):
            reply = say_hello(f"call {i}".encode(), timeout=5).decode()
            print(reply)
            served_by[reply.rsplit(" from ", 1)[1]] += 1
        print("calls per provider:", dict(sorted(served_by.items())))
    bootstrap.close()
