"""Runs every sample as a user would: real processes, real sockets, port 50051.

Each sample folder holds a server.py that serves until Enter is pressed and a client.py
that calls it once. The tests run them one folder at a time (they share the port), check
what both sides printed, and check that the server exits cleanly once Enter is pressed.
samples/demo.py runs alone on a free port and must finish by itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
HOST, PORT = "127.0.0.1", 50051

SERVER_START_TIMEOUT = 15  # seconds until server.py must accept connections
CLIENT_TIMEOUT = 30  # seconds for client.py to finish
SERVER_STOP_TIMEOUT = 10  # seconds for server.py to exit after Enter
DEMO_TIMEOUT = 60

PROMPT = "Press Enter to stop the server..."


def _env() -> dict[str, str]:
    # The work tree's dubbo comes first, so the samples test this checkout even when
    # another dubbo is installed; unbuffered output keeps what a killed process printed.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _port_accepts() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    """Kill a process we started (by its own PID) and collect what it printed."""
    if process.poll() is None:
        process.kill()
    try:
        return process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        return "", ""


def _wait_until_serving(server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out, err = server.communicate(timeout=5)
            pytest.fail(
                f"server exited with {server.returncode} before serving\n"
                f"stdout:\n{out}\nstderr:\n{err}"
            )
        if _port_accepts():
            return
        time.sleep(0.1)
    out, err = _stop(server)
    pytest.fail(
        f"server did not accept connections on {HOST}:{PORT} within "
        f"{SERVER_START_TIMEOUT} s\nstdout:\n{out}\nstderr:\n{err}"
    )


def _lines(text: str, prefix: str | tuple[str, ...]) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def _greeting_replies(*names: str) -> list[str]:
    return [f"Received response: {name}" for name in names]


def _greeting_requests(*names: str) -> list[str]:
    return [f"Received message from {name}" for name in names]


@pytest.mark.parametrize(
    ("folder", "client_lines", "server_lines"),
    [
        pytest.param(
            "helloworld",
            _greeting_replies("hello, dubbo-python"),
            _greeting_requests("dubbo-python"),
            id="helloworld",
        ),
        pytest.param(
            "unary",
            _greeting_replies("hello, dubbo-python"),
            _greeting_requests("dubbo-python"),
            id="unary",
        ),
        pytest.param(
            "client_stream",
            _greeting_replies("hello to 3 people: alice, bob, carol"),
            _greeting_requests("alice", "bob", "carol"),
            id="client_stream",
        ),
        pytest.param(
            "server_stream",
            _greeting_replies(
                "hello #1, dubbo-python", "hello #2, dubbo-python", "hello #3, dubbo-python"
            ),
            _greeting_requests("dubbo-python"),
            id="server_stream",
        ),
        pytest.param(
            # .proto -> python -m dubbo.protoc -> server and client on the generated code
            "generated",
            _greeting_replies(
                "hello, dubbo-python", "hello, alice and bob", "hello #1, carol",
                "hello #2, carol", "hello, dave", "hello, erin", "hello, frank (status OK)",
            ),
            _greeting_requests("dubbo-python", "alice", "bob", "carol", "dave", "erin", "frank"),
            id="generated",
        ),
        pytest.param(
            # The user's example from the streaming docs, as written.
            "bidi_stream",
            _greeting_replies("hello", "world", "from", "dubbo-python"),
            _greeting_requests("hello", "world", "from", "dubbo-python"),
            id="bidi_stream",
        ),
    ],
)
def test_sample(folder: str, client_lines: list[str], server_lines: list[str]) -> None:
    if _port_accepts():
        pytest.fail(f"{HOST}:{PORT} is already in use; the samples need it free")

    server = subprocess.Popen(
        [sys.executable, str(SAMPLES / folder / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(),
    )
    try:
        _wait_until_serving(server)

        try:
            client = subprocess.run(
                [sys.executable, str(SAMPLES / folder / "client.py")],
                stdin=subprocess.DEVNULL,
                check=False,  # the exit code is asserted below, with the output
                capture_output=True,
                text=True,
                cwd=REPO,
                env=_env(),
                timeout=CLIENT_TIMEOUT,  # run() kills the client itself on expiry
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"client.py did not finish within {CLIENT_TIMEOUT} s\n{exc.stdout}")
        assert client.returncode == 0, (
            f"client.py exited with {client.returncode}\n"
            f"stdout:\n{client.stdout}\nstderr:\n{client.stderr}"
        )
        assert _lines(client.stdout, "Received response:") == client_lines, client.stdout

        # Press Enter: the server must stop and the process must end by itself.
        try:
            out, err = server.communicate("\n", timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            out, err = _stop(server)
            pytest.fail(
                f"server.py still running {SERVER_STOP_TIMEOUT} s after Enter\n"
                f"stdout:\n{out}\nstderr:\n{err}"
            )
        assert server.returncode == 0, (
            f"server.py exited with {server.returncode}\nstdout:\n{out}\nstderr:\n{err}"
        )
        assert PROMPT in out
        assert _lines(out, "Received message from") == server_lines, out
    finally:
        _stop(server)


@pytest.mark.parametrize("script", ["proto/generate.sh", "generated/generate.sh"])
def test_committed_stubs_are_what_the_generator_writes(script: str, tmp_path: Path) -> None:
    """Each sample's committed *_dubbo.py is what its generate.sh writes today (the
    first line, naming the versions that wrote it, aside)."""
    shutil.copytree(SAMPLES / Path(script).parent, tmp_path / "copy")
    for old in (tmp_path / "copy").rglob("*_dubbo.py"):
        old.unlink()
    env = dict(_env(), PATH=os.pathsep.join((os.path.dirname(sys.executable),
                                             os.environ.get("PATH", ""))))
    done = subprocess.run(["bash", str(tmp_path / "copy" / Path(script).name)], env=env,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    committed = sorted((SAMPLES / Path(script).parent).rglob("*_dubbo.py"))
    assert committed
    for path in committed:
        fresh = tmp_path / "copy" / path.relative_to(SAMPLES / Path(script).parent)
        assert fresh.read_text().split("\n", 1)[1] == path.read_text().split("\n", 1)[1], path


def test_demo() -> None:
    try:
        demo = subprocess.run(
            [sys.executable, str(SAMPLES / "demo.py")],
            stdin=subprocess.DEVNULL,
            check=False,  # the exit code is asserted below, with the output
            capture_output=True,
            text=True,
            cwd=REPO,
            env=_env(),
            timeout=DEMO_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"demo.py did not finish within {DEMO_TIMEOUT} s\n{exc.stdout}")
    assert demo.returncode == 0, (
        f"demo.py exited with {demo.returncode}\nstdout:\n{demo.stdout}\nstderr:\n{demo.stderr}"
    )
    out = demo.stdout

    url = _lines(out, "server listening, calling tri://127.0.0.1:")
    assert len(url) == 1, out
    port = url[0].split("127.0.0.1:", 1)[1].split("/", 1)[0]
    assert port.isdigit() and int(port) > 0, url  # port=0 became a real port

    # Exchanges in call order; the bidi lines alternate because each request goes out
    # only after the previous reply came back.
    assert _lines(out, ("  sent", "  received")) == [
        "  sent     'dubbo'",
        "  received 'hello, dubbo'",
        "  sent     ['alice', 'bob', 'carol']",
        "  received 'hello to 3 people: alice, bob, carol'",
        "  sent     'dubbo'",
        "  received 'hello #1, dubbo'",
        "  received 'hello #2, dubbo'",
        "  received 'hello #3, dubbo'",
        "  sent     'alice'",
        "  received 'hello, alice'",
        "  sent     'bob'",
        "  received 'hello, bob'",
        "  sent     'carol'",
        "  received 'hello, carol'",
    ], out
    headers = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert headers[1:] == [
        "unary (sayHello): one request, one reply",
        "client stream (clientStream): many requests, one reply",
        "server stream (serverStream): one request, many replies",
        "bidi stream (biStream): requests and replies interleaved",
        "errors: a method the server does not have",
        "client closed, server stopped",
    ], out
    assert len(_lines(out, "  RpcError UNIMPLEMENTED")) == 1, out


@pytest.mark.timeout(120)
def test_registry_sample(zookeeper) -> None:
    """Two providers and a consumer of samples/registry, through a real ZooKeeper."""
    env = dict(_env(), ZOOKEEPER=zookeeper.address)
    providers = [subprocess.Popen([sys.executable, str(SAMPLES / "registry" / "provider.py"), name],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env)
                 for name in ("north", "south")]
    try:
        for provider in providers:
            line = provider.stdout.readline()
            assert "serving on 127.0.0.1:" in line, line + provider.stderr.read()
        done = subprocess.run([sys.executable, str(SAMPLES / "registry" / "consumer.py"), "6"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert "calls per provider: {'north': 3, 'south': 3}" in done.stdout, done.stdout
        for provider in providers:
            out, err = provider.communicate("\n", timeout=30)
            assert provider.returncode == 0, err
    finally:
        for provider in providers:
            if provider.poll() is None:
                provider.kill()
                provider.communicate(timeout=10)


# samples/interceptors/*.py -> regular expressions that must each match a line of stdout
INTERCEPTOR_SAMPLES = {
    "interceptors": [
        r"client: 'hello alice', x-served-by = sample$",
        r"server: greet ended OK$",
        r"server /org\.apache\.dubbo\.samples\.Greeter/greet OK \d+\.\d ms "
        r"peer=ipv4:127\.0\.0\.1:\d+$",
        r"client: \['tick 0', 'tick 1', 'tick 2'\]$",
        r"client without a token: UNAUTHENTICATED 'missing bearer token'$",
        r"server /org\.apache\.dubbo\.samples\.Greeter/greet UNAUTHENTICATED "
        r"'missing bearer token' \d+\.\d ms peer=ipv4:127\.0\.0\.1:\d+$",
    ],
    "metrics": [
        r'grpc_server_handled_total\{grpc_code="OK",grpc_method="greet",'
        r'grpc_service="org\.apache\.dubbo\.samples\.Greeter",grpc_type="UNARY"\} 2\.0$',
        r'grpc_server_handled_total\{grpc_code="NOT_FOUND",grpc_method="fail",.* 1\.0$',
        r'grpc_client_handled_total\{grpc_code="OK",grpc_method="greet",.* 2\.0$',
        r'grpc_server_handling_seconds_count\{grpc_method="greet",.* 2\.0$',
    ],
    "tracing": [
        r"server: traceparent = 00-[0-9a-f]{32}-[0-9a-f]{16}-0[13]$",
        r"span: org\.apache\.dubbo\.samples\.Greeter/greet kind=CLIENT .* status_code=0$",
        r"span: org\.apache\.dubbo\.samples\.Greeter/greet kind=SERVER .* status_code=0$",
    ],
}


def test_every_interceptor_sample_is_checked() -> None:
    on_disk = sorted(p.stem for p in (SAMPLES / "interceptors").glob("*.py"))
    assert on_disk == sorted(INTERCEPTOR_SAMPLES)


@pytest.mark.parametrize("name", sorted(INTERCEPTOR_SAMPLES))
def test_interceptor_sample(name: str) -> None:
    import re

    try:
        done = subprocess.run(
            [sys.executable, str(SAMPLES / "interceptors" / f"{name}.py")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
            env=_env(), timeout=CLIENT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name}.py did not finish within {CLIENT_TIMEOUT} s\n{exc.stdout}")
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    lines = done.stdout.splitlines()
    missing = [p for p in INTERCEPTOR_SAMPLES[name] if not any(re.match(p, x) for x in lines)]
    assert not missing, f"{name}.py did not print lines matching {missing}\n{report}"
    if name == "tracing":  # one trace: the server span's parent is the client span
        spans = {m.group(1): m for m in (re.match(
            r"span: \S+ kind=(\w+) trace=(\w+) id=(\w+) parent=(\w+)", x) for x in lines) if m}
        assert spans["SERVER"].group(4) == spans["CLIENT"].group(3)
        assert spans["SERVER"].group(2) == spans["CLIENT"].group(2) == spans["INTERNAL"].group(2)


def test_grpcio_code_sample() -> None:
    """samples/grpcio_code: grpcio's generated servicer on dubbo.Server, and grpcio client
    code over dubbo.Channel; with --grpcio the same client uses grpc.insecure_channel,
    and prints the same."""
    if _port_accepts():
        pytest.fail(f"{HOST}:{PORT} is already in use; the samples need it free")
    folder = SAMPLES / "grpcio_code"
    server = subprocess.Popen(
        [sys.executable, str(folder / "server.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO, env=_env(),
    )
    try:
        _wait_until_serving(server)
        outputs = []
        for extra in ([], ["--grpcio"]):
            client = subprocess.run(
                [sys.executable, str(folder / "client.py"), *extra],
                stdin=subprocess.DEVNULL, check=False, capture_output=True, text=True,
                cwd=REPO, env=_env(), timeout=CLIENT_TIMEOUT,
            )
            assert client.returncode == 0, (
                f"client.py {extra} exited with {client.returncode}\n"
                f"stdout:\n{client.stdout}\nstderr:\n{client.stderr}"
            )
            outputs.append(client.stdout)
        assert outputs[0] == outputs[1]
        out = outputs[0]
        assert _lines(out, "Received response:") == _greeting_replies(
            "hello, dubbo-python (token none)", "hello, with-call (token secret)",
            "hello, future (token none)", "hello to 2 people: alice, bob",
            "hello #1, stream", "hello #2, stream", "hello #3, stream", "PING", "PONG",
        ), out
        assert "status OK, trailing metadata {'x-served-by': 'dubbo'}" in out
        assert "Error: INVALID_ARGUMENT: name is required" in out

        try:
            out, err = server.communicate("\n", timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            out, err = _stop(server)
            pytest.fail(f"server.py still running after Enter\nstdout:\n{out}\nstderr:\n{err}")
        assert server.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
        names = ["dubbo-python", "with-call", "future", "alice", "bob", "stream", "ping",
                 "pong", ""]
        assert _lines(out, "Received message from") == [
            f"Received message from {name}" for name in names * 2], out
    finally:
        _stop(server)
