"""Generated stubs: ``python -m dubbo.protoc`` and ``protoc-gen-dubbo`` run as a user runs
them (subprocesses), their output served by our server and called by our stub and by
grpcio, type-checked by mypy; the generator and argument planning tested directly."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

import dubbo
from dubbo import RpcError, StatusCode
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.protoc.__main__ import protoc_arguments
from dubbo.protoc.generator import generate, output_name, pb2_module, python_names

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "tests" / "protos"
GREETER = "acme/greet/v1/greeter.proto"
ADMIN = "acme/greet/v1/admin.proto"
TYPES = "acme/common/types.proto"
CLOCK = "acme/edition/clock-service.proto"
TIMEOUT = 10  # seconds, for every call below
RUN_TIMEOUT = 120  # seconds, for every subprocess below


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), extra.get("PYTHONPATH"), os.environ.get("PYTHONPATH")) if p)
    return env


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", _env())
    return subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          cwd=kwargs.pop("cwd", REPO), check=False, **kwargs)


def _dubbo_protoc(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dubbo.protoc", "-I", str(PROTOS),
                 f"--python_out={out}", f"--dubbo_out={out}", *extra])


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``python -m dubbo.protoc`` writes for the test protos (with grpcio's
    ``_pb2_grpc`` too, from the same command)."""
    folder = tmp_path_factory.mktemp("generated")
    done = _dubbo_protoc(folder, f"--grpc_python_out={folder}", GREETER, ADMIN, TYPES, CLOCK)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture(scope="module")
def modules(out: Path) -> Iterator[dict[str, ModuleType]]:
    sys.path.insert(0, str(out))
    try:
        yield {name.rsplit(".", 1)[1]: importlib.import_module(name) for name in (
            "acme.greet.v1.greeter_dubbo", "acme.greet.v1.greeter_pb2",
            "acme.greet.v1.admin_dubbo",
            "acme.greet.v1.greeter_pb2_grpc", "acme.common.types_pb2",
            "acme.edition.clock_service_dubbo", "acme.edition.clock_service_pb2")}
    finally:
        sys.path.remove(str(out))


# -- the command line -------------------------------------------------------------------


def test_writes_modules_stubs_and_types(out: Path) -> None:
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        "acme/common/types_pb2.py", "acme/common/types_pb2.pyi",
        "acme/common/types_pb2_grpc.py",  # grpcio's plugin writes one even without services
        "acme/edition/clock_service_dubbo.py", "acme/edition/clock_service_pb2.py",
        "acme/edition/clock_service_pb2.pyi", "acme/edition/clock_service_pb2_grpc.py",
        "acme/greet/v1/admin_dubbo.py", "acme/greet/v1/admin_pb2.py",
        "acme/greet/v1/admin_pb2.pyi", "acme/greet/v1/admin_pb2_grpc.py",
        "acme/greet/v1/greeter_dubbo.py", "acme/greet/v1/greeter_pb2.py",
        "acme/greet/v1/greeter_pb2.pyi", "acme/greet/v1/greeter_pb2_grpc.py",
    ]
    source = (out / "acme/greet/v1/admin_dubbo.py").read_text()
    assert "import acme.common.types_pb2 as acme_dot_common_dot_types__pb2" in source
    assert "import google.protobuf.empty_pb2 as google_dot_protobuf_dot_empty__pb2" in source


def _plugin_executable(folder: Path) -> Path:
    """The installed ``protoc-gen-dubbo`` console script, or (in a checkout not
    reinstalled since the entry point was added) the same script as pip writes it."""
    installed = shutil.which("protoc-gen-dubbo", path=os.path.dirname(sys.executable))
    if installed:
        return Path(installed)
    script = folder / "protoc-gen-dubbo"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom dubbo.protoc.plugin import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    return script


def test_plugin_for_any_protoc_writes_the_same(out: Path, tmp_path: Path) -> None:
    """grpcio-tools' protoc run plainly finds protoc-gen-dubbo on PATH, as any protoc
    would; its output equals what python -m dubbo.protoc wrote."""
    plugin = _plugin_executable(tmp_path)
    target = tmp_path / "out"
    target.mkdir()
    env = _env(PATH=os.pathsep.join((str(plugin.parent), os.environ.get("PATH", ""))))
    done = _run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTOS),
                 f"--dubbo_out={target}", GREETER, ADMIN, TYPES, CLOCK], env=env)
    assert done.returncode == 0, done.stderr
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == ["acme/edition/clock_service_dubbo.py", "acme/greet/v1/admin_dubbo.py",
                       "acme/greet/v1/greeter_dubbo.py"]
    for name in written:
        assert (target / name).read_text() == (out / name).read_text(), name


def test_plugin_setup_cfg_entry_point() -> None:
    text = (REPO / "setup.cfg").read_text()
    assert "protoc-gen-dubbo = dubbo.protoc.plugin:main" in text
    assert "protoc =\n" in text and "grpcio-tools" in text.split("protoc =\n", 1)[1]


def test_user_pyi_out_is_kept(tmp_path: Path) -> None:
    types = tmp_path / "types"
    types.mkdir()
    done = _dubbo_protoc(tmp_path, f"--pyi_out={types}", GREETER, TYPES)
    assert done.returncode == 0, done.stderr
    assert (types / "acme/greet/v1/greeter_pb2.pyi").exists()
    assert not (tmp_path / "acme/greet/v1/greeter_pb2.pyi").exists()


@pytest.mark.parametrize(("args", "message"), [
    pytest.param([], "usage: python -m dubbo.protoc", id="no-arguments"),
    pytest.param(["-I", str(PROTOS), "--dubbo_out=.", "acme/no/such.proto"],
                 "acme/no/such.proto", id="missing-file"),
    pytest.param(["-I", str(PROTOS), "--dubbo_out=.", "--dubbo_opt=bogus", GREETER],
                 "--dubbo_out: unknown option 'bogus'", id="unknown-option"),
    pytest.param(["-I", str(PROTOS), "--dubbo_out=/nonexistent/dir", GREETER],
                 "/nonexistent/dir", id="missing-output-dir"),
])
def test_bad_arguments_fail_clearly(args: list[str], message: str, tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "dubbo.protoc", *args], cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_without_grpcio_tools_names_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "grpc_tools"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('No module named grpc_tools')\n")
    done = _run([sys.executable, "-m", "dubbo.protoc", "-I", str(PROTOS), "--dubbo_out=.",
                 GREETER], env=_env(PYTHONPATH=str(tmp_path)), cwd=tmp_path)
    assert done.returncode == 2
    assert "pip install 'dubbo[protoc]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_plugin_run_by_hand_explains_itself(tmp_path: Path) -> None:
    plugin = [sys.executable, "-m", "dubbo.protoc.plugin"]
    done = _run([*plugin, "--bogus"])
    assert done.returncode == 2 and "protoc plugin" in done.stderr, done.stderr
    done = _run(plugin, input="not a request")
    assert done.returncode == 1
    assert "not a CodeGeneratorRequest" in done.stderr, done.stderr
    done = _run([*plugin, "--version"])
    assert done.returncode == 0 and done.stdout.startswith("protoc-gen-dubbo "), done.stdout


# -- serving the generated servicer, calling with the generated stub --------------------


@pytest.fixture
def served(modules: dict[str, ModuleType]) -> Iterator[int]:
    """A server with only added services: Greeter (all four kinds), Admin (a few),
    Farewell and Clock (not overridden at all)."""
    g, pb, types = modules["greeter_dubbo"], modules["greeter_pb2"], modules["types_pb2"]
    a, clock = modules["admin_dubbo"], modules["clock_service_dubbo"]

    class Greeter(g.GreeterServicer):  # type: ignore[misc,name-defined]
        def SayHello(self, request: Any, context: Any) -> Any:
            user = dict(context.invocation_metadata()).get("x-user", "-")
            left = context.time_remaining()
            return pb.HelloReply(message=f"hello, {request.name} (user {user}, "
                                         f"deadline {'yes' if left else 'no'})")

        def SayHelloToAll(self, request_iterator: Any, context: Any) -> Any:
            return pb.HelloReply(message=",".join(r.name for r in request_iterator))

        def SayHelloTimes(self, request: Any, context: Any) -> Any:
            for i in range(3):
                yield pb.HelloReply(message=f"{i}:{request.name}")

        def chat(self, request_iterator: Any, context: Any) -> Any:
            for request in request_iterator:
                yield pb.HelloReply(message=request.name.upper())

    class Admin(a.AdminServicer):  # type: ignore[misc,name-defined]
        resets = 0

        def Reset(self, request: Any, context: Any) -> Any:
            Admin.resets += 1
            return request

        def lookup(self, request: Any) -> Any:  # no context: it is optional
            return types.Outer.Inner(text=request.value, count=len(request.value))

        def import_(self, request: Any, context: Any) -> Any:
            return types.Name(value=f"imported {request.value}")

        def service_handler_(self, request: Any, context: Any) -> Any:
            return pb.HelloReply(message="a wrong reply type")

    server = dubbo.Server(ServiceConfig(port=0))
    g.add_GreeterServicer_to_server(Greeter(), server)
    a.add_AdminServicer_to_server(Admin(), server)
    g.add_FarewellServicer_to_server(g.FarewellServicer(), server)
    clock.add_ClockServicer_to_server(clock.ClockServicer(), server)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def _client(port: int, service: str) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{service}"))


def test_four_kinds(served: int, modules: dict[str, ModuleType]) -> None:
    g, pb = modules["greeter_dubbo"], modules["greeter_pb2"]
    with _client(served, "acme.greet.v1.Greeter") as client:
        stub = g.GreeterStub(client)
        reply = stub.SayHello(pb.HelloRequest(name="ann"), timeout=TIMEOUT,
                              metadata=[("x-user", "bob")])
        assert reply == pb.HelloReply(message="hello, ann (user bob, deadline yes)")
        reply, call = stub.SayHello(pb.HelloRequest(name="cy"), with_call=True)
        assert reply.message == "hello, cy (user -, deadline no)"
        assert call.code() == StatusCode.OK
        names = (pb.HelloRequest(name=n) for n in ("a", "b", "c"))
        assert stub.SayHelloToAll(names, timeout=TIMEOUT).message == "a,b,c"
        reply, call = stub.SayHelloToAll([pb.HelloRequest(name="d")], with_call=True,
                                          compression="gzip")
        assert (reply.message, call.code()) == ("d", StatusCode.OK)
        replies = stub.SayHelloTimes(pb.HelloRequest(name="x"), timeout=TIMEOUT)
        assert [r.message for r in replies] == ["0:x", "1:x", "2:x"]
        assert replies.code() == StatusCode.OK
        chat = stub.chat(iter([pb.HelloRequest(name="hi"), pb.HelloRequest(name="yo")]),
                         timeout=TIMEOUT)
        assert [r.message for r in chat] == ["HI", "YO"]


def test_names_python_needs_other_files_and_nested_types(
        served: int, modules: dict[str, ModuleType]) -> None:
    a, types = modules["admin_dubbo"], modules["types_pb2"]
    empty = importlib.import_module("google.protobuf.empty_pb2")
    with _client(served, "acme.greet.v1.Admin") as client:
        admin = a.AdminStub(client)
        assert admin.lookup(types.Name(value="abc"), timeout=TIMEOUT) == \
            types.Outer.Inner(text="abc", count=3)
        assert admin.import_(types.Name(value="x"), timeout=TIMEOUT).value == "imported x"
        assert isinstance(admin.Reset(empty.Empty(), timeout=TIMEOUT), empty.Empty)
        with pytest.raises(RpcError) as failed:  # handler returned a HelloReply
            admin.service_handler_(types.Name(value="x"), timeout=TIMEOUT)
        assert failed.value.code in (StatusCode.UNKNOWN, StatusCode.INTERNAL)
        assert "service_handler reply: expected acme.common.Name, got " \
            "acme.greet.v1.greeter_pb2.HelloReply" in failed.value.details
    # the rpc marked idempotent may be retried by failover; the others may not
    source = Path(a.__file__).read_text()
    assert source.count("idempotent=True") == 1
    assert source.index("idempotent=True") > source.index('"Reset"')


def test_not_overridden_is_unimplemented(served: int, modules: dict[str, ModuleType]) -> None:
    a, pb = modules["admin_dubbo"], modules["greeter_pb2"]
    clock, ticks = modules["clock_service_dubbo"], modules["clock_service_pb2"]
    with _client(served, "acme.greet.v1.Admin") as client:
        with pytest.raises(RpcError) as failed:
            a.AdminStub(client).NotServed(pb.HelloRequest(), timeout=TIMEOUT)
        assert failed.value.code == StatusCode.UNIMPLEMENTED
        assert "/acme.greet.v1.Admin/NotServed" in failed.value.details
    with _client(served, "acme.edition.Clock") as client:
        with pytest.raises(RpcError) as failed:
            list(clock.ClockStub(client).Watch(ticks.Tick(seconds=1), timeout=TIMEOUT))
        assert failed.value.code == StatusCode.UNIMPLEMENTED


def test_every_kind_unimplemented(modules: dict[str, ModuleType]) -> None:
    g, pb = modules["greeter_dubbo"], modules["greeter_pb2"]
    request = pb.HelloRequest(name="x")
    with dubbo.Server(ServiceConfig(g.GreeterServicer().service_handler(), port=0)) as server, \
            _client(server.port, "acme.greet.v1.Greeter") as client:
        stub = g.GreeterStub(client)
        calls = [lambda: stub.SayHello(request, timeout=TIMEOUT),
                 lambda: stub.SayHelloToAll(iter([request]), timeout=TIMEOUT),
                 lambda: list(stub.SayHelloTimes(request, timeout=TIMEOUT)),
                 lambda: list(stub.chat(iter([request]), timeout=TIMEOUT))]
        for call in calls:
            with pytest.raises(RpcError) as failed:
                call()
            assert failed.value.code == StatusCode.UNIMPLEMENTED


def test_stub_refuses_wrong_types_and_services(served: int,
                                                modules: dict[str, ModuleType]) -> None:
    g, types = modules["greeter_dubbo"], modules["types_pb2"]
    with _client(served, "acme.greet.v1.Greeter") as client:
        stub = g.GreeterStub(client)
        with pytest.raises(TypeError, match="expected acme.greet.v1.HelloRequest"):
            stub.SayHello(types.Name(value="x"), timeout=TIMEOUT)
        with pytest.raises(ValueError, match="FarewellStub calls acme.greet.v1.Farewell"):
            g.FarewellStub(client)


def test_service_handler_carries_the_file_descriptor(modules: dict[str, ModuleType]) -> None:
    g, pb = modules["greeter_dubbo"], modules["greeter_pb2"]
    handler = g.GreeterServicer().service_handler()
    assert handler.service_name == "acme.greet.v1.Greeter"
    assert sorted(handler.method_handlers) == ["SayHello", "SayHelloTimes", "SayHelloToAll",
                                               "chat"]
    assert handler.file_descriptor is pb.DESCRIPTOR
    admin = modules["admin_dubbo"]
    assert sorted(admin.AdminServicer().service_handler().method_handlers) == [
        "NotServed", "Reset", "import", "lookup", "service_handler"]
    # service GreeterStub's classes sit beside service Admin's, no name taken twice
    assert admin.__all__ == ["AdminStub", "AdminServicer", "add_AdminServicer_to_server",
                             "GreeterStubStub", "GreeterStubServicer",
                             "add_GreeterStubServicer_to_server"]
    assert admin.GreeterStubServicer().service_handler().service_name == \
        "acme.greet.v1.GreeterStub"


def test_grpcio_client_calls_the_generated_servicer(served: int,
                                                     modules: dict[str, ModuleType]) -> None:
    grpc = pytest.importorskip("grpc")
    pb, pb_grpc = modules["greeter_pb2"], modules["greeter_pb2_grpc"]
    with grpc.insecure_channel(f"127.0.0.1:{served}") as channel:
        stub = pb_grpc.GreeterStub(channel)
        reply = stub.SayHello(pb.HelloRequest(name="g"), timeout=TIMEOUT,
                              metadata=[("x-user", "grpc")])
        assert reply.message == "hello, g (user grpc, deadline yes)"
        assert stub.SayHelloToAll(iter([pb.HelloRequest(name="p"), pb.HelloRequest(name="q")]),
                                  timeout=TIMEOUT).message == "p,q"
        assert [r.message for r in stub.SayHelloTimes(pb.HelloRequest(name="s"),
                                                      timeout=TIMEOUT)] == ["0:s", "1:s", "2:s"]
        assert [r.message for r in stub.chat(iter([pb.HelloRequest(name="b")]),
                                             timeout=TIMEOUT)] == ["B"]
        with pytest.raises(grpc.RpcError) as failed:  # FarewellServicer: not overridden
            pb_grpc.FarewellStub(channel).SayGoodbye(pb.HelloRequest(), timeout=TIMEOUT)
        assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- mypy sees the types ----------------------------------------------------------------

GOOD = """\
    from collections.abc import Iterable, Iterator

    import dubbo
    from dubbo.configs import ReferenceConfig, ServiceConfig
    from dubbo.proxy.stub import ServicerContext

    from acme.greet.v1 import greeter_dubbo, greeter_pb2


    class Greeter(greeter_dubbo.GreeterServicer):
        def SayHello(self, request: greeter_pb2.HelloRequest,
                     context: ServicerContext) -> greeter_pb2.HelloReply:
            return greeter_pb2.HelloReply(message=request.name)

        def chat(self, request_iterator: Iterator[greeter_pb2.HelloRequest],
                 context: ServicerContext) -> Iterable[greeter_pb2.HelloReply]:
            for request in request_iterator:
                yield greeter_pb2.HelloReply(message=request.name)


    def main() -> None:
        server = dubbo.Server(ServiceConfig(port=0))
        greeter_dubbo.add_GreeterServicer_to_server(Greeter(), server)
        url = f"tri://127.0.0.1:{server.start().port}/acme.greet.v1.Greeter"
        stub = greeter_dubbo.GreeterStub(dubbo.Client(ReferenceConfig.from_url(url)))
        text: str = stub.SayHello(greeter_pb2.HelloRequest(name="x"), timeout=5).message
        reply, call = stub.SayHello(greeter_pb2.HelloRequest(), with_call=True)
        print(text, reply.message, call.code(), call.trailing_metadata())
        one: greeter_pb2.HelloReply = stub.SayHelloToAll([greeter_pb2.HelloRequest()])
        replies = stub.SayHelloTimes(greeter_pb2.HelloRequest(), metadata=[("k", "v")])
        first: greeter_pb2.HelloReply = next(replies)
        print(one, first, replies.code(), replies.cancel())
        for r in stub.chat(iter([greeter_pb2.HelloRequest()]), compression="gzip"):
            print(r.message)
"""

BAD = """\
    from dubbo.proxy.stub import ServicerContext

    from acme.common import types_pb2
    from acme.greet.v1 import greeter_dubbo, greeter_pb2


    def wrong(stub: greeter_dubbo.GreeterStub) -> None:
        stub.SayHello(types_pb2.Name(value="x"))
        count: int = stub.SayHello(greeter_pb2.HelloRequest()).message
        stub.SayHello(greeter_pb2.HelloRequest(), timeout="soon")
        stub.chat(greeter_pb2.HelloRequest())
        stub.sayHello(greeter_pb2.HelloRequest())


    class Greeter(greeter_dubbo.GreeterServicer):
        def SayHello(self, request: types_pb2.Name,
                     context: ServicerContext) -> greeter_pb2.HelloReply:
            return greeter_pb2.HelloReply()
"""


def test_mypy_strict_sees_the_message_types(out: Path, tmp_path: Path) -> None:
    """A correct program (and samples/generated) passes ``mypy --strict``, generated
    code included; wrong request types, reply types, keywords and method names are
    errors."""
    pytest.importorskip("mypy")
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    (tmp_path / "bad.py").write_text(textwrap.dedent(BAD))
    # dubbo as an installed package would be: its types used, its own modules not
    # re-checked (they are, by the project's own mypy run).
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n\n"
                                       "[mypy-dubbo.*]\nfollow_imports = silent\n")
    sample = REPO / "samples" / "generated"  # its server and client are checked too
    env = _env(MYPYPATH=os.pathsep.join((str(REPO), str(out), str(sample / "gen"))))
    done = _run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini",
                 "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
                 "--hide-error-context", "--no-pretty", "good.py", "bad.py",
                 str(sample / "server.py"), str(sample / "client.py")],
                cwd=tmp_path, env=env)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if not e.startswith("bad.py:")], done.stdout + done.stderr
    lines = {int(e.split(":")[1]) for e in errors}
    assert lines == {8, 9, 10, 11, 12, 16}, done.stdout
    assert 'has no attribute "sayHello"' in done.stdout
    assert "incompatible with supertype" in done.stdout


# -- the generator and the argument plan, without protoc --------------------------------


def test_module_names_follow_protoc() -> None:
    assert pb2_module("a/b/my-file.proto") == "a.b.my_file_pb2"
    assert output_name("a/b/my-file.proto") == "a/b/my_file_dubbo.py"
    assert output_name("top.proto") == "top_dubbo.py"


def test_arguments_add_types_plugin_and_paths() -> None:
    plan = protoc_arguments(["--python_out", "out", "--dubbo_out=out", "x.proto"],
                            "/p/plugin", "/wk")
    assert plan == ["--python_out", "out", "--dubbo_out=out", "x.proto", "--pyi_out=out",
                    "--plugin=protoc-gen-dubbo=/p/plugin", "-I.", "-I/wk"]
    plan = protoc_arguments(["-Iprotos", "--python_out=annotate_code:gen", "--pyi_out=t",
                             "--plugin=protoc-gen-dubbo=/mine", "--dubbo_out=gen", "x.proto"],
                            "/p/plugin", "/wk")
    assert plan == ["-Iprotos", "--python_out=annotate_code:gen", "--pyi_out=t",
                    "--plugin=protoc-gen-dubbo=/mine", "--dubbo_out=gen", "x.proto", "-I/wk"]
    plan = protoc_arguments(["-I", "p", "--python_out=gen", "x.proto"], "/p/plugin", None)
    assert plan == ["-I", "p", "--python_out=gen", "x.proto", "--pyi_out=gen"]


def _request(*files: descriptor_pb2.FileDescriptorProto, parameter: str = ""
             ) -> plugin_pb2.CodeGeneratorRequest:
    return plugin_pb2.CodeGeneratorRequest(
        file_to_generate=[f.name for f in files], parameter=parameter, proto_file=files)


def _file(name: str, services: dict[str, list[str]], package: str = "p",
          comment: str = "") -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    file.message_type.add(name="M")
    for s, (service, methods) in enumerate(services.items()):
        proto = file.service.add(name=service)
        for method in methods:
            proto.method.add(name=method, input_type=f".{package}.M", output_type=f".{package}.M",
                             server_streaming=method.endswith("s"))
        if comment:
            file.source_code_info.location.add(path=[6, s], leading_comments=comment)
    return file


def test_generated_source_compiles_with_hostile_names_and_comments() -> None:
    comment = ' Ends in a quote" and has """triple""" quotes, a \\ backslash\n and lines. '
    file = _file("d/x.proto", {"S": ["class", "def", "def_", "service_handler", "items"],
                               "SStub": ["Go"]}, comment=comment)
    response = generate(_request(file))
    assert not response.error
    assert response.supported_features & plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    (generated,) = response.file
    assert generated.name == "d/x_dubbo.py"
    code = compile(generated.content, generated.name, "exec")  # valid Python, or SyntaxError
    assert code.co_filename == "d/x_dubbo.py"
    for name in ("def class_(", "def service_handler_(", "def items(", "class SStubStub:",
                 "class SStub:", "def service_handler(self)"):
        assert name in generated.content, name
    # "def_" keeps its name, so "def" takes the next free one; the wire names stay
    for rpc, python in (("def", "def__"), ("def_", "def_"), ("items", "items")):
        assert f'self.{python}, "{rpc}"' in generated.content, rpc
    assert 'RpcMethodHandler.server_stream(\n                    self.items, "items"' in \
        generated.content
    assert python_names(["from", "from_", "service_handler"]) == {
        "from": "from__", "from_": "from_", "service_handler": "service_handler_"}
    classes = {node.name: node for node in ast.parse(generated.content).body
               if isinstance(node, ast.ClassDef)}
    assert 'quote" and has """triple""" quotes, a \\ backslash\nand lines.' in \
        (ast.get_docstring(classes["SStub"]) or "")


def test_files_without_services_get_no_module_and_errors_are_reported() -> None:
    response = generate(_request(_file("m.proto", {})))
    assert not response.error and not response.file
    response = generate(_request(_file("x.proto", {"S": ["Go"]}), parameter="fast,bogus=1"))
    assert response.error == "unknown option 'fast' (options protoc-gen-dubbo knows: none)"
    broken = _file("y.proto", {"S": ["Go"]})
    broken.service[0].method[0].input_type = ".q.Missing"
    response = generate(_request(broken))
    assert response.error == "y.proto: p.S.Go uses q.Missing, which no file defines"
