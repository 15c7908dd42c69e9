"""Runs every samples/features/*.py as a user would (``python samples/features/x.py``)
and checks that it exits 0 by itself and prints the lines its docs page promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FEATURES = REPO / "samples" / "features"
TIMEOUT = 60

# sample -> regular expressions that must each match the start of a line of its stdout
EXPECTED = {
    "deadlines": [
        r"client: quick, timeout=5 -> handler saw (4\.\d|5\.0) s left",
        r"client: quick, no timeout -> handler saw none",
        r"client: slow call failed: DEADLINE_EXCEEDED after 0\.[5-9] s",
        r"server: slow handler stopped working, is_active\(\) = False",
        r"client: \?timeout=300 -> handler saw 0\.[23] s left",
    ],
    "cancellation": [
        r"client: got tick 2",
        r"client: cancelled, call code = CANCELLED",
        r"client: reading on raises CANCELLED",
        r"server: callback ran, the call is over",
        r"server: handler finished, is_active\(\) = False",
    ],
    "metadata": [
        r"server: x-user = 'alice', x-trace-bin = b'\\x01\\x02'",
        r"server: peer = ipv4:127\.0\.0\.1:\d+",
        r"client: reply = 'hello alice'",
        r"client: initial metadata = .*\('x-server', 'sample'\)",
        r"client: trailing metadata = .*\('x-cost-bin', b'\\x00\*'\)",
        r"client: code = OK",
        r"client: PERMISSION_DENIED 'you shall not pass', trailing .*\('x-reason', 'no-ticket'\)",
        r"client: \?version=2\.0\.0 -> 'served by version 2\.0\.0'",
    ],
    "errors": [
        r"client: abort: NOT_FOUND 'no such user: ü'",
        r"client: set_code: FAILED_PRECONDITION 'account locked'",
        r"client: rich: INVALID_ARGUMENT 'name must not be empty'",
        r"client:   status details: ",
        r"client: crash: UNKNOWN '.*a bug in the handler'",
    ],
    "compressed_calls": [
        r"client: gzip both ways, 1056000 bytes back, intact: True",
        r"client: deflate for one call, 1056000 bytes back, intact: True",
        r"client: bzip2 from the URL, 1056000 bytes back, intact: True",
    ],
    "limits": [
        r"client: 1024 bytes -> server got 1024",
        r"client: 2000 bytes -> RESOURCE_EXHAUSTED",
        r"client: 5000 bytes -> RESOURCE_EXHAUSTED",
        r"client: second call while the only worker is busy -> RESOURCE_EXHAUSTED",
        r"client: first call -> done",
    ],
    "shutdown": [
        r"client: new call during shutdown -> UNAVAILABLE",
        r"client: in-flight call -> work finished",
        r"server: stopped after [0-2]\.\d s",
    ],
    "keepalive": [
        r"client: got 'watching'",
        r"client: call failed with UNAVAILABLE after [0-2]\.\d s",
    ],
    "connection_loss": [
        r"client: stream started, got 0",
        r"client: in-flight stream failed with (UNAVAILABLE|CANCELLED)",
        r"client: call while the server is down -> UNAVAILABLE in 0\.\d\d s",
        r"client: server is back, reconnected: 'hello'",
    ],
    "health": [
        r"client: server -> SERVING$",
        r"client: org\.apache\.dubbo\.samples\.Orders -> SERVING$",
        r"client: unknown service -> NOT_FOUND$",
        r"client: watch -> NOT_SERVING$",
        r"client: org\.apache\.dubbo\.samples\.Orders -> NOT_SERVING$",
        r"client: watch -> SERVING$",
        r"client: watch -> NOT_SERVING \(end\)$",
    ],
    "json_and_curl": [
        r"HTTP/1\.1: 200 \{'message': 'hello, http'\}",
        r"HTTP/1\.1 error: 400 \{'status': '400', 'message': 'name is empty'\}",
        r"curl HTTP/2: (\{\"message\":\"hello, h2\"\}|\(curl not installed\))",
        r"grpc\+json: hello, grpc",
    ],
    "cli": [
        r"list: dubbo\.demo\.Greeter, grpc\.health\.v1\.Health, ",
        r"describe: rpc SayHello\(dubbo\.demo\.HelloRequest\) returns \(dubbo\.demo\.HelloReply\);",
        r"call: exit 0: \{\"message\": \"hello, cli\"\}",
        r"failed call: exit 1: INVALID_ARGUMENT: name is empty",
        r"health: exit 0: SERVING",
    ],
    "reflection": [
        r"client: service grpc\.health\.v1\.Health$",
        r"client: service grpc\.reflection\.v1\.ServerReflection$",
        r"client: service grpc\.reflection\.v1alpha\.ServerReflection$",
        r"client: service org\.apache\.dubbo\.samples\.proto\.Greeter$",
        r"client: greeter\.proto: rpc Greeter\.sayHello\(org\.apache\.dubbo\.samples\.proto"
        r"\.GreeterRequest\) returns \(org\.apache\.dubbo\.samples\.proto\.GreeterReply\)$",
        r"client: greeter\.proto: rpc Greeter\.biStream\(",
    ],
}


def test_every_sample_is_checked():
    on_disk = sorted(p.stem for p in FEATURES.glob("*.py"))
    assert on_disk == sorted(EXPECTED)


@pytest.mark.timeout(TIMEOUT + 15)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_feature_sample(name):
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(
            [sys.executable, str(FEATURES / f"{name}.py")],
            cwd=REPO, env=env, capture_output=True, text=True, encoding="utf-8",
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name}.py did not exit within {TIMEOUT} s\nstdout:\n{exc.stdout}\n"
                    f"stderr:\n{exc.stderr}")
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, f"{name}.py exited with {done.returncode}\n{report}"
    lines = done.stdout.splitlines()
    missing = [p for p in EXPECTED[name] if not any(re.match(p, line) for line in lines)]
    assert not missing, f"{name}.py did not print lines matching {missing}\n{report}"
