"""PyPI's apache-dubbo 3.0.0b1 as a registry peer: venv.py builds its virtualenv;
provider.py and consumer.py run in it (``[python, "-I", PROVIDER, zk_address]``)."""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
PROVIDER = os.path.join(HERE, "provider.py")
CONSUMER = os.path.join(HERE, "consumer.py")
# the service both scripts serve and call; its unary sayHello replies b"hello, " + request
SERVICE = "org.apache.dubbo.samples.registry.Greeter"
