"""``python -m dubbo`` (also the ``dubbo`` command): talk to a Triple/gRPC server from a
shell, in JSON, with the types taken from server reflection or from .proto files.

Exit status: 0 success (``health``: SERVING); 1 the call failed (its status code name
and details on stderr); 2 bad usage (arguments, request JSON, an unknown service or
method, a .proto that does not compile); 3 no connection to the server; 4 ``health``:
the server answered, not SERVING.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from .._version import __version__
from ..status import RpcError, StatusCode

__all__ = ["main", "EXIT_OK", "EXIT_RPC_ERROR", "EXIT_USAGE", "EXIT_UNREACHABLE",
           "EXIT_NOT_SERVING"]

EXIT_OK = 0
EXIT_RPC_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_SERVING = 4


class UsageError(Exception):
    """Bad input from the user: exit 2 with the message."""


class Unreachable(Exception):
    """No TCP connection to the server: exit 3."""


# -- targets ----------------------------------------------------------------------

def parse_target(text: str) -> tuple[str, int, str]:
    """``tri://host:port/path`` (or ``host:port/path``) -> host, port, path (no slash)."""
    rest = text
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("tri", "grpc", "http"):
            raise UsageError(f"unsupported scheme {scheme!r} in {text!r}: use tri://host:port")
    address, _, path = rest.partition("/")
    if address.startswith("["):  # [::1]:50051
        host, _, port_text = address[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit():
        raise UsageError(f"expected tri://host:port[/...], got {text!r}")
    return host, int(port_text), path.strip("/")


def split_method(path: str) -> tuple[str, str]:
    """``pkg.Service/Method`` (or ``pkg.Service.Method``) -> service, method."""
    if "/" in path:
        service, _, method = path.rpartition("/")
    else:
        service, _, method = path.rpartition(".")
    if not service or not method:
        raise UsageError(f"expected pkg.Service/Method, got {path!r}")
    return service, method


def check_reachable(host: str, port: int, timeout: float) -> None:
    """Fail fast, with its own exit status, when nothing listens there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise Unreachable(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None


def parse_metadata(items: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise UsageError(f"-H takes key:value, got {item!r}")
        pairs.append((key.strip().lower(), value.strip()))
    return pairs


# -- descriptors ------------------------------------------------------------------

def compile_protos(files: Sequence[str], includes: Sequence[str]) -> dict[str, Any]:
    """FileDescriptorProtos (by name) of ``files`` and their imports, compiled by the
    protoc in grpcio-tools."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise UsageError("--proto needs grpcio-tools (pip install grpcio-tools); "
                         "or let the server's reflection supply the types") from None
    from google.protobuf import descriptor_pb2

    builtin = os.path.join(os.path.dirname(os.path.abspath(protoc.__file__)), "_proto")
    # protoc wants each file under an include path, spelled the same way: absolute both.
    # A name that is not a path from here is one under an -I directory (protoc's way).
    files = [os.path.abspath(f) if os.path.exists(f) else f for f in files]
    paths = [os.path.abspath(p) for p in includes] or \
        sorted({os.path.dirname(f) for f in files})
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        args = ["protoc", f"--descriptor_set_out={out}", "--include_imports",
                *(f"-I{p}" for p in paths), f"-I{builtin}", *files]
        if protoc.main(args) != 0 or not os.path.exists(out):
            raise UsageError(f"protoc could not compile {' '.join(files)} (see above)")
        with open(out, "rb") as f:
            descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return {proto.name: proto for proto in descriptor_set.file}


class Types:
    """Where the CLI's descriptors come from: --proto files, else server reflection."""

    def __init__(self, args: argparse.Namespace, host: str, port: int,
                 metadata: list[tuple[str, str]]) -> None:
        self.protos = list(args.proto or ())
        self.includes = list(args.include or ())
        self.args = args
        self.host, self.port, self.metadata = host, port, metadata
        self.reflection: Any = None

    def pool_for(self, symbols: Sequence[str]) -> Any:
        if self.protos:
            from .reflection import build_pool

            return build_pool(compile_protos(self.protos, self.includes))
        from .reflection import ReflectionClient

        self.reflection = ReflectionClient(
            self.host, self.port, timeout=self.args.timeout, metadata=self.metadata,
            connect_timeout=self.args.connect_timeout)
        try:
            return self.reflection.pool_for(symbols)
        except RpcError as exc:
            if exc.code is StatusCode.NOT_FOUND:
                raise UsageError(f"the server does not know {', '.join(symbols)}: "
                                 f"{exc.details}") from None
            if exc.code is StatusCode.UNIMPLEMENTED:
                raise RpcError(exc.code, f"{exc.details}; pass --proto FILE "
                                         "for the types") from None
            raise

    def close(self) -> None:
        if self.reflection is not None:
            self.reflection.close()


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == 3


def _type_name(field: Any) -> str:
    from google.protobuf.descriptor import FieldDescriptor

    if field.message_type is not None:
        options = field.message_type.GetOptions()
        if getattr(options, "map_entry", False):
            key, value = field.message_type.fields_by_name["key"], \
                field.message_type.fields_by_name["value"]
            return f"map<{_type_name(key)}, {_type_name(value)}>"
        return str(field.message_type.full_name)
    if field.enum_type is not None:
        return str(field.enum_type.full_name)
    names = {getattr(FieldDescriptor, n): n[5:].lower() for n in dir(FieldDescriptor)
             if n.startswith("TYPE_")}
    return names.get(field.type, "?")


def _method_line(method: Any) -> str:
    client_streaming = getattr(method, "client_streaming", False)
    server_streaming = getattr(method, "server_streaming", False)
    return (f"rpc {method.name}({'stream ' if client_streaming else ''}"
            f"{method.input_type.full_name}) returns "
            f"({'stream ' if server_streaming else ''}{method.output_type.full_name});")


def describe_symbol(pool: Any, symbol: str) -> str:
    """A service, method, message or enum in .proto-like text."""
    try:
        service = pool.FindServiceByName(symbol)
    except KeyError:
        service = None
    if service is not None:
        lines = [f"service {service.full_name} {{"]
        lines += [f"  {_method_line(m)}" for m in service.methods]
        return "\n".join(lines + ["}"])
    try:
        message = pool.FindMessageTypeByName(symbol)
    except KeyError:
        message = None
    if message is not None:
        lines = [f"message {message.full_name} {{"]
        for field in message.fields:
            map_field = _type_name(field).startswith("map<")
            label = "repeated " if _repeated(field) and not map_field else ""
            lines.append(f"  {label}{_type_name(field)} {field.name} = {field.number};")
        return "\n".join(lines + ["}"])
    try:
        enum = pool.FindEnumTypeByName(symbol)
    except KeyError:
        enum = None
    if enum is not None:
        lines = [f"enum {enum.full_name} {{"]
        lines += [f"  {v.name} = {v.number};" for v in enum.values]
        return "\n".join(lines + ["}"])
    service_name, method_name = split_method(symbol)
    try:
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
    except KeyError:
        raise UsageError(f"no service, method, message or enum named {symbol!r}") from None
    return _method_line(method)


# -- requests ---------------------------------------------------------------------

def read_data(args: argparse.Namespace, stdin: TextIO) -> str:
    data = args.data if args.data is not None else args.request
    if data is None:
        return ""
    if data == "@-":
        return stdin.read()
    if data.startswith("@"):
        with open(data[1:], encoding="utf-8") as f:
            return f.read()
    return str(data)


def json_values(text: str) -> Iterator[Any]:
    """The JSON values in ``text``, one after another (a stream of requests)."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise UsageError(f"bad request JSON: {exc}") from None
        yield value


def to_message(value: Any, cls: Any) -> Any:
    from google.protobuf import json_format

    try:
        return json_format.ParseDict(value, cls())
    except json_format.ParseError as exc:
        raise UsageError(f"bad request for {cls.DESCRIPTOR.full_name}: {exc}") from None


def print_message(message: Any, out: TextIO) -> None:
    from google.protobuf import json_format

    out.write(json.dumps(json_format.MessageToDict(message), ensure_ascii=False) + "\n")
    out.flush()


# -- commands ---------------------------------------------------------------------

def _client(host: str, port: int, service: str, args: argparse.Namespace) -> Any:
    from ..client import Client
    from ..configs import ReferenceConfig

    reference = ReferenceConfig.from_url(f"tri://{host}:{port}/{service}?cluster=failfast")
    return Client(reference, connect_timeout=args.connect_timeout)


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    host, port, _ = parse_target(args.target)
    check_reachable(host, port, args.connect_timeout)
    from .reflection import ReflectionClient

    with ReflectionClient(host, port, timeout=args.timeout, metadata=parse_metadata(args.H),
                          connect_timeout=args.connect_timeout) as reflection:
        for name in reflection.list_services():
            out.write(name + "\n")
    return EXIT_OK


def cmd_describe(args: argparse.Namespace, out: TextIO) -> int:
    host, port, symbol = parse_target(args.target)
    metadata = parse_metadata(args.H)
    if not args.proto:
        check_reachable(host, port, args.connect_timeout)
    types = Types(args, host, port, metadata)
    try:
        if symbol:
            lookup = symbol.replace("/", ".")
            pool = types.pool_for([lookup])
            out.write(describe_symbol(pool, symbol) + "\n")
            return EXIT_OK
        if args.proto:
            raise UsageError("describe with --proto needs a symbol: tri://host:port/pkg.Service")
        from .reflection import ReflectionClient

        with ReflectionClient(host, port, timeout=args.timeout, metadata=metadata,
                              connect_timeout=args.connect_timeout) as reflection:
            services = reflection.list_services()
        pool = types.pool_for(services)
        out.write("\n".join(describe_symbol(pool, s) for s in services) + "\n")
        return EXIT_OK
    finally:
        types.close()


def cmd_call(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    host, port, path = parse_target(args.target)
    service_name, method_name = split_method(path)
    metadata = parse_metadata(args.H)
    text = read_data(args, stdin)
    check_reachable(host, port, args.connect_timeout)
    types = Types(args, host, port, metadata)
    try:
        pool = types.pool_for([service_name])
    finally:
        types.close()
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        raise UsageError(f"no service {service_name!r} in the .proto files") from None
    method = service.methods_by_name.get(method_name)
    if method is None:
        known = ", ".join(sorted(service.methods_by_name))
        raise UsageError(f"no method {method_name!r} in {service_name!r} (it has {known})")
    from ..wire.json_codec import message_class

    request_cls = message_class(method.input_type)
    response_cls = message_class(method.output_type)
    client_streaming = bool(getattr(method, "client_streaming", False))
    server_streaming = bool(getattr(method, "server_streaming", False))
    if client_streaming:
        requests: Any = [to_message(v, request_cls) for v in json_values(text)]
    else:
        values = list(json_values(text)) or [{}]
        if len(values) != 1:
            raise UsageError(f"{method_name} takes one request, got {len(values)}")
        requests = to_message(values[0], request_cls)

    def serialize(message: Any) -> bytes:
        return bytes(message.SerializeToString())

    client = _client(host, port, service_name, args)
    try:
        kind = {(False, False): client.unary, (True, False): client.client_stream,
                (False, True): client.server_stream, (True, True): client.bidi_stream}[
            (client_streaming, server_streaming)]
        call = kind(method_name, serialize, response_cls.FromString)
        request_arg = iter(requests) if client_streaming else requests
        result = call(request_arg, timeout=args.timeout, metadata=metadata)
        if server_streaming:
            for reply in result:
                print_message(reply, out)
        else:
            print_message(result, out)
    finally:
        client.close()
    return EXIT_OK


def cmd_health(args: argparse.Namespace, out: TextIO) -> int:
    host, port, path = parse_target(args.target)
    service = args.service if args.service is not None else path
    check_reachable(host, port, args.connect_timeout)
    from ..services._protobuf import message_class
    from ..services.health import ServingStatus

    request_cls = message_class("grpc.health.v1.HealthCheckRequest")
    response_cls = message_class("grpc.health.v1.HealthCheckResponse")
    client = _client(host, port, "grpc.health.v1.Health", args)
    try:
        check = client.unary("Check", lambda m: bytes(m.SerializeToString()),
                             response_cls.FromString)
        reply = check(request_cls(service=service), timeout=args.timeout,
                      metadata=parse_metadata(args.H))
    finally:
        client.close()
    try:
        status = ServingStatus(reply.status)
    except ValueError:
        status = ServingStatus.UNKNOWN
    out.write(status.name + "\n")
    return EXIT_OK if status is ServingStatus.SERVING else EXIT_NOT_SERVING


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from ..configs import ServiceConfig
    from ..server import Server
    from . import demo

    server = Server(ServiceConfig(demo.service_handler(), host=args.host, port=args.port),
                    reflection=True)
    server.start()
    out.write(f"serving {demo.SERVICE_NAME} on {args.host}:{server.port} "
              "(reflection on); Ctrl-C stops\n")
    out.flush()
    try:
        server.wait_for_termination()
    finally:
        server.stop()
    return EXIT_OK


# -- entry point ------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dubbo", description="Call Triple/gRPC servers in JSON.",
        epilog="exit status: 0 ok, 1 the call failed, 2 usage, 3 cannot connect, "
               "4 health: not SERVING")
    parser.add_argument("--version", action="version", version=f"dubbo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--timeout", type=float, default=10.0,
                       help="seconds the call may take (default 10)")
        p.add_argument("--connect-timeout", type=float, default=5.0,
                       help="seconds to connect (default 5)")
        p.add_argument("-H", action="append", default=[], metavar="KEY:VALUE",
                       help="request metadata (repeatable)")

    def protos(p: argparse.ArgumentParser) -> None:
        p.add_argument("--proto", action="append", metavar="FILE",
                       help="take the types from this .proto (repeatable) instead of "
                            "server reflection; needs grpcio-tools")
        p.add_argument("-I", "--import-path", dest="include", action="append",
                       metavar="DIR", help="where --proto files and their imports are")

    p = commands.add_parser("list", help="the services a server offers (via reflection)")
    p.add_argument("target", help="tri://host:port")
    common(p)
    p = commands.add_parser("describe", help="a service's methods, or a message's fields")
    p.add_argument("target", help="tri://host:port[/pkg.Service|/pkg.Message]")
    common(p)
    protos(p)
    p = commands.add_parser("call", help="call a method with a JSON request")
    p.add_argument("target", help="tri://host:port/pkg.Service/Method")
    p.add_argument("request", nargs="?", help="the request as JSON (default {})")
    p.add_argument("-d", "--data", help="the request: JSON, @FILE, or @- for stdin "
                                        "(streaming requests: several JSON objects)")
    common(p)
    protos(p)
    p = commands.add_parser("health", help="grpc.health.v1 Check: exit 0 when SERVING")
    p.add_argument("target", help="tri://host:port")
    p.add_argument("service", nargs="?", help="the service to ask about (default: server)")
    common(p)
    p = commands.add_parser("serve", help="serve a demo Greeter (with reflection)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run the CLI; the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse does not give a positional that follows options to ``call``'s optional
    # ``request``: take it here.
    if extra and getattr(args, "request", "") is None and len(extra) == 1 and \
            not extra[0].startswith("-"):
        args.request, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            return cmd_list(args, out)
        if args.command == "describe":
            return cmd_describe(args, out)
        if args.command == "call":
            return cmd_call(args, out, stdin or sys.stdin)
        if args.command == "health":
            return cmd_health(args, out)
        return cmd_serve(args, out)
    except UsageError as exc:
        err.write(f"dubbo: {exc}\n")
        return EXIT_USAGE
    except Unreachable as exc:
        err.write(f"dubbo: {exc}\n")
        return EXIT_UNREACHABLE
    except RpcError as exc:
        err.write(f"{exc.code.name}: {exc.details}\n")
        return EXIT_RPC_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # @FILE that does not open, ...
        err.write(f"dubbo: {exc}\n")
        return EXIT_USAGE
