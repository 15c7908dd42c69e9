"""The small things a new user trips on (issue 10): handler signatures, metadata as a
dict, a closed client, a busy port, a bad reply, and Ctrl-C / SIGTERM."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from subprocesses import ctrl_c_works

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.status import RpcError, StatusCode

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "test.Usability"


def _serve(*handlers: RpcMethodHandler) -> dubbo.Server:
    return dubbo.Server(ServiceConfig(RpcServiceHandler(SERVICE, list(handlers)),
                                      host="127.0.0.1", port=0)).start()


def _client(server: dubbo.Server) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{server.port}/{SERVICE}"))


# -- which handlers get the context ------------------------------------------------------

def _with_default(request, prefix=b"hi "):  # type: ignore[no-untyped-def]
    return prefix + request


def _with_context(request, context):  # type: ignore[no-untyped-def]
    return request + (b" active" if context.is_active() else b"")


def _context_with_default(request, context=None):  # type: ignore[no-untyped-def]
    return request + (b" ctx" if context is not None else b" none")


def _decorated(fn):  # type: ignore[no-untyped-def]
    def wrapper(*args):  # type: ignore[no-untyped-def]
        return fn(*args)
    wrapper.__name__ = fn.__name__
    return wrapper


@_decorated
def _wrapped(request, context):  # type: ignore[no-untyped-def]
    return request + b" wrapped " + context.peer().split(":")[0].encode()


def test_context_goes_only_to_a_handler_that_asks_for_it() -> None:
    server = _serve(RpcMethodHandler.unary(_with_default, method_name="default"),
                    RpcMethodHandler.unary(_with_context, method_name="context"),
                    RpcMethodHandler.unary(_context_with_default, method_name="named"),
                    RpcMethodHandler.unary(_wrapped, method_name="wrapped"))
    try:
        with _client(server) as client:
            # A second parameter with a default keeps its default ...
            assert client.unary("default")(b"x", timeout=5) == b"hi x"
            # ... unless it is named context; one without a default gets it too.
            assert client.unary("context")(b"x", timeout=5) == b"x active"
            assert client.unary("named")(b"x", timeout=5) == b"x ctx"
            # A decorator's (*args) wrapper is called as grpcio would call it.
            assert client.unary("wrapped")(b"x", timeout=5) == b"x wrapped ipv4"
    finally:
        server.stop()


# -- metadata as a dict ------------------------------------------------------------------

def _echo_metadata(request, context):  # type: ignore[no-untyped-def]
    pairs = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
    return repr(sorted(pairs)).encode()


def test_metadata_may_be_a_dict_or_pairs() -> None:
    server = _serve(RpcMethodHandler.unary(_echo_metadata, method_name="md"))
    try:
        with _client(server) as client:
            call = client.unary("md")
            expected = repr([("x-a", "1"), ("x-b", "two")]).encode()
            assert call(b"", metadata={"x-a": "1", "x-b": "two"}, timeout=5) == expected
            assert call(b"", metadata=[("x-a", "1"), ("x-b", "two")], timeout=5) == expected
            with pytest.raises(ValueError, match="pairs or a dict"):
                call(b"", metadata=["x-a"], timeout=5)
            with pytest.raises(ValueError, match="pairs or a dict"):
                call(b"", metadata="x-a=1", timeout=5)  # type: ignore[arg-type]
    finally:
        server.stop()


# -- a closed client ---------------------------------------------------------------------

def test_a_call_after_close_says_so_and_is_not_retryable() -> None:
    server = _serve(RpcMethodHandler.unary(_with_default, method_name="default"))
    try:
        client = _client(server)
        call = client.unary("default")
        assert call(b"x", timeout=5) == b"hi x"
        client.close()
        with pytest.raises(RpcError) as info:
            call(b"x", timeout=5)
        # UNAVAILABLE would tell callers (and failover) to try again.
        assert info.value.code is StatusCode.FAILED_PRECONDITION
        assert "closed" in info.value.details and SERVICE in info.value.details
    finally:
        server.stop()


# -- a busy port -------------------------------------------------------------------------

def test_a_busy_port_is_named_in_the_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(_with_default)])
        server = dubbo.Server(ServiceConfig(service, host="127.0.0.1", port=port))
        with pytest.raises(OSError) as info:
            server.start()
        assert info.value.errno == errno.EADDRINUSE
        assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        holder.close()


# -- a reply of the wrong type -----------------------------------------------------------

def _returns_str(request):  # type: ignore[no-untyped-def]
    return "not bytes"


def test_a_reply_of_the_wrong_type_is_logged_on_the_server(
        caplog: pytest.LogCaptureFixture) -> None:
    server = _serve(RpcMethodHandler.unary(_returns_str, method_name="bad"))
    try:
        with _client(server) as client, caplog.at_level(logging.ERROR, logger="dubbo.server"):
            with pytest.raises(RpcError) as info:
                client.unary("bad")(b"x", timeout=5)
            assert info.value.code is StatusCode.INTERNAL
            assert "expected bytes" in info.value.details
        logged = [r.getMessage() for r in caplog.records if r.name == "dubbo.server"]
        assert any(f"/{SERVICE}/bad" in m and "str" in m for m in logged), logged
    finally:
        server.stop()


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------

_SERVER_SCRIPT = textwrap.dedent("""
    import sys, time
    import dubbo
    from dubbo.configs import ServiceConfig
    from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler

    def slow(request):
        time.sleep(float(request))
        return b"done"

    service = RpcServiceHandler("test.Usability", [RpcMethodHandler.unary(slow)])
    config = ServiceConfig(service, host="127.0.0.1", port=0)
    if sys.argv[1] == "with":
        with dubbo.Server(config) as server:
            print(server.port, flush=True)
            input()
    elif sys.argv[1] == "plain":  # apache-dubbo's style: no with, no try
        server = dubbo.Server(config).start()
        print(server.port, flush=True)
        input()
        server.stop()
    else:
        server = dubbo.Server(config).start()
        print(server.port, flush=True)
        print("returned", server.wait_for_termination(), flush=True)
    print("after", flush=True)
""")


@pytest.mark.parametrize("style,sig,code,output", [
    ("wait", signal.SIGINT, 0, ["returned True", "after"]),
    ("wait", signal.SIGTERM, 128 + signal.SIGTERM, []),
    ("with", signal.SIGTERM, 128 + signal.SIGTERM, []),
    # Interrupted in input(), stop() is never reached: the atexit handler stops it.
    ("plain", signal.SIGINT, -signal.SIGINT, []),
    ("plain", signal.SIGTERM, 128 + signal.SIGTERM, []),
])
def test_a_signal_stops_the_server_gracefully(tmp_path: Path, style: str, sig: signal.Signals,
                                              code: int, output: list[str]) -> None:
    script = tmp_path / "serve.py"
    script.write_text(_SERVER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), style], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True, env=env, preexec_fn=ctrl_c_works)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        client = dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"))
        results: list[object] = []
        # A call that is running when the signal comes finishes within the grace period.
        caller = threading.Thread(target=lambda: results.append(
            client.unary("slow")(b"1.0", timeout=10)))
        caller.start()
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
        caller.join(10)
        client.close()
        assert results == [b"done"]
        assert time.monotonic() - started < 5
        assert proc.returncode == code
        assert out.split() == " ".join(output).split()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_is_taken_while_a_server_runs_and_a_programs_own_handler_is_left_alone(
) -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    first, second = _serve(), _serve()
    try:
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        first.stop()
        # still ours: another server runs
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        first.stop()
        second.stop()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back

    def own(signum, frame):  # type: ignore[no-untyped-def]
        pass

    signal.signal(signal.SIGTERM, own)
    try:
        server = _serve()
        assert signal.getsignal(signal.SIGTERM) is own
        server.stop()
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
