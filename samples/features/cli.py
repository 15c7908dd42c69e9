"""The dubbo command line against a server with reflection: what a shell user types,
run here as subprocesses. See docs/cli.md."""

import os
import subprocess
import sys

import dubbo
from dubbo.cli import demo
from dubbo.configs import ServiceConfig


def dubbo_cli(*args):
    done = subprocess.run([sys.executable, "-m", "dubbo", *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ))
    return done.returncode, (done.stdout + done.stderr).strip()


if __name__ == "__main__":
    # The demo Greeter `python -m dubbo serve` runs; reflection=True lets tools see it.
    config = ServiceConfig(demo.service_handler(), host="127.0.0.1", port=0)
    with dubbo.Server(config, reflection=True) as server:
        target = f"tri://127.0.0.1:{server.port}"
        code, out = dubbo_cli("list", target)
        print("list:", out.replace("\n", ", "))
        code, out = dubbo_cli("describe", f"{target}/dubbo.demo.Greeter")
        print("describe:", out.splitlines()[1].strip())
        code, out = dubbo_cli("call", f"{target}/dubbo.demo.Greeter/SayHello",
                              '{"name": "cli"}')
        print(f"call: exit {code}: {out}")
        code, out = dubbo_cli("call", f"{target}/dubbo.demo.Greeter/SayHello", "{}")
        print(f"failed call: exit {code}: {out}")
        code, out = dubbo_cli("health", target)
        print(f"health: exit {code}: {out}")
