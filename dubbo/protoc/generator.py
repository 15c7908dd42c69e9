"""Writes ``x_dubbo.py`` for the services of ``x.proto``: no I/O, protobuf descriptors in,
Python source out (``generate`` takes and returns protoc's plugin messages).

For each service ``Greeter`` of package ``pkg`` the module holds:

* ``GreeterStub(client)``: one method per rpc, named as in the .proto, typed with the
  message classes of the ``_pb2`` modules (whose ``.pyi`` files protoc writes);
* ``GreeterServicer``: a base class to override; what is not overridden answers
  UNIMPLEMENTED; ``service_handler()`` turns it into an ``RpcServiceHandler``;
* ``add_GreeterServicer_to_server(servicer, server)``: grpcio's spelling of
  ``server.add_service(servicer.service_handler())``.

Names the generated code needs for itself start with an underscore or end in ``Stub``,
``Servicer`` or ``_to_server``; a method whose name Python cannot use (``def``,
``class``...) or that would hide ``service_handler`` gets a trailing underscore.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

from .._version import __version__

__all__ = [
    "GeneratorError",
    "generate",
    "generate_file",
    "output_name",
    "pb2_module",
    "python_names",
]

# Option names --dubbo_opt understands; none yet, so any given one is refused by name.
KNOWN_OPTIONS: frozenset[str] = frozenset()

# Servicer attributes a method must not hide.
_RESERVED = frozenset({"service_handler"})

# descriptor.proto field numbers, for source_code_info paths.
_FILE_SERVICE = 6
_SERVICE_METHOD = 2


class GeneratorError(Exception):
    """A problem with the request (options, names) to report to protoc's user."""


def pb2_module(proto_name: str) -> str:
    """The module protoc's Python generator writes for ``proto_name``:
    ``a/b-c.proto`` -> ``a.b_c_pb2``."""
    return _module_base(proto_name) + "_pb2"


def output_name(proto_name: str) -> str:
    """Where our module for ``proto_name`` goes: ``a/b.proto`` -> ``a/b_dubbo.py``."""
    return _module_base(proto_name).replace(".", "/") + "_dubbo.py"


def _module_base(proto_name: str) -> str:
    base = proto_name[:-len(".proto")] if proto_name.endswith(".proto") else proto_name
    return base.replace("-", "_").replace("/", ".")


def _alias(module: str) -> str:
    """grpcio's alias for an imported module, unique per module: ``_`` doubles, ``.``
    becomes ``_dot_`` (so ``a.b_pb2`` -> ``a_dot_b__pb2``)."""
    return module.replace("_", "__").replace(".", "_dot_")


def _usable(name: str) -> bool:
    return not keyword.iskeyword(name) and name not in _RESERVED


def python_names(methods: Iterable[str]) -> dict[str, str]:
    """The Python name of each rpc: its own, unless Python or our classes need it; then
    with underscores added until it is no other rpc's name (``def`` -> ``def_``, or
    ``def__`` when the service also has a ``def_``)."""
    methods = list(methods)
    taken = {name for name in methods if _usable(name)}
    names = {}
    for method in methods:
        name = method
        if not _usable(name):
            while not _usable(name) or name in taken:
                name += "_"
            taken.add(name)
        names[method] = name
    return names


@dataclass(frozen=True)
class _Message:
    module: str  # the _pb2 module that defines it
    path: str  # its name inside that module: "Outer.Inner"


def _messages(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, _Message]:
    """Every message type of the request by full name (".pkg.Outer.Inner")."""
    found: dict[str, _Message] = {}

    def walk(types: Iterable[descriptor_pb2.DescriptorProto], prefix: str, path: str,
             module: str) -> None:
        for message in types:
            full, inner = f"{prefix}.{message.name}", f"{path}{message.name}"
            found[full] = _Message(module, inner)
            walk(message.nested_type, full, inner + ".", module)

    for file in files:
        prefix = f".{file.package}" if file.package else ""
        walk(file.message_type, prefix, "", pb2_module(file.name))
    return found


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Leading (else trailing) comments of services and methods, by descriptor path."""
    out: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        path = tuple(location.path)
        if path[:1] != (_FILE_SERVICE,) or len(path) not in (2, 4):
            continue
        text = (location.leading_comments or location.trailing_comments).strip()
        if text:
            out[path] = "\n".join(line.strip() for line in text.splitlines())
    return out


def _docstring(text: str, indent: str) -> list[str]:
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    lines = text.splitlines() or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *(f"{indent}{line}".rstrip() for line in lines[1:]),
            f'{indent}"""']


@dataclass(frozen=True)
class _Method:
    name: str  # as in the .proto: the wire path uses it
    py: str  # as in Python
    request: str  # Python expressions of the message classes
    response: str
    client_streaming: bool
    server_streaming: bool
    idempotent: bool
    doc: str

    @property
    def kind(self) -> str:
        return {(False, False): "unary", (True, False): "client_stream",
                (False, True): "server_stream", (True, True): "bi_stream"}[
            (self.client_streaming, self.server_streaming)]


class _Writer:
    """Source lines of one module."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def parse_options(parameter: str) -> dict[str, str]:
    """``--dubbo_opt=a,b=c`` as a dict; unknown options are an error, not ignored."""
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in parameter.split(","))):
        key, _, value = item.partition("=")
        if key not in KNOWN_OPTIONS:
            known = ", ".join(sorted(KNOWN_OPTIONS)) or "none"
            raise GeneratorError(f"unknown option {key!r} (options protoc-gen-dubbo "
                                 f"knows: {known})")
        options[key] = value
    return options


def generate(request: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    """protoc's plugin call: a module for each file to generate that has services.

    Errors go into the response (protoc prints them and fails), as plugins must.
    """
    response = plugin_pb2.CodeGeneratorResponse()
    # Services are the same in every syntax and edition: all are welcome.
    features = int(plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL)
    if hasattr(response, "maximum_edition"):  # protobuf 4.2x knows no editions
        features |= plugin_pb2.CodeGeneratorResponse.FEATURE_SUPPORTS_EDITIONS
        response.minimum_edition = descriptor_pb2.EDITION_PROTO2
        response.maximum_edition = descriptor_pb2.EDITION_2024
    response.supported_features = features
    try:
        parse_options(request.parameter)
        files = {file.name: file for file in request.proto_file}
        messages = _messages(request.proto_file)
        version = request.compiler_version if request.HasField("compiler_version") else None
        protoc = None if version is None else \
            f"{version.major}.{version.minor}.{version.patch}{version.suffix}"
        for name in request.file_to_generate:
            file = files[name]
            if not file.service:
                continue  # nothing to serve or call: no module (as protoc-gen-go-grpc)
            out = response.file.add()
            out.name = output_name(name)
            out.content = generate_file(file, messages, protoc)
    except GeneratorError as exc:
        response.error = str(exc)
    return response


def generate_file(file: descriptor_pb2.FileDescriptorProto,
                  messages: dict[str, _Message] | None = None,
                  protoc: str | None = None) -> str:
    """The source of ``x_dubbo.py`` for one .proto file (``messages``: every message type
    the file may use, by full name; its own when omitted)."""
    if messages is None:
        messages = _messages([file])
    own = pb2_module(file.name)
    imports = {own}
    comments = _comments(file)
    services: list[tuple[str, str, str, list[_Method]]] = []
    for s, service in enumerate(file.service):
        full = f"{file.package}.{service.name}" if file.package else service.name
        methods: list[_Method] = []
        py_names = python_names(method.name for method in service.method)
        for m, method in enumerate(service.method):
            types = []
            for type_name in (method.input_type, method.output_type):
                message = messages.get(type_name)
                if message is None:
                    raise GeneratorError(f"{file.name}: {full}.{method.name} uses "
                                         f"{type_name.lstrip('.')}, which no file defines")
                imports.add(message.module)
                types.append(f"{_alias(message.module)}.{message.path}")
            level = method.options.idempotency_level
            methods.append(_Method(
                method.name, py_names[method.name], types[0], types[1], method.client_streaming,
                method.server_streaming, level in (descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
                                                   descriptor_pb2.MethodOptions.IDEMPOTENT),
                comments.get((_FILE_SERVICE, s, _SERVICE_METHOD, m), "")))
        services.append((service.name, full, comments.get((_FILE_SERVICE, s), ""), methods))

    w = _Writer()
    w(f"# Generated by protoc-gen-dubbo {__version__}"
      + (f" (protoc {protoc})" if protoc else "") + ".  DO NOT EDIT!",
      f"# source: {file.name}",
      "# ruff: noqa",
      "# flake8: noqa",
      f'"""Triple (gRPC) client stubs and servicers for {file.name}."""',
      "",
      "from __future__ import annotations",
      "",
      "import collections.abc as _abc",
      "import typing as _typing",
      "",
      "from dubbo.proxy import stub as _dubbo",
      "")
    for module in sorted(imports):
        w(f"import {module} as {_alias(module)}")
    w("", "__all__ = [")
    for name, _full, _doc, _methods in services:
        w(f'    "{name}Stub",', f'    "{name}Servicer",', f'    "add_{name}Servicer_to_server",')
    w("]", "", "")
    for name, full, doc, methods in services:
        _stub(w, name, full, doc, methods, own)
        _servicer(w, name, full, doc, methods, own)
    return w.text()


_KEYWORDS = ("timeout: float | None = None, metadata: _dubbo.Metadata | None = None")
_PASS = "timeout=timeout, metadata=metadata, compression=compression"


def _stub(w: _Writer, name: str, full: str, doc: str, methods: list[_Method],
          own: str) -> None:
    w(f"class {name}Stub:")
    w(*_docstring(f"Calls {full} through a ``dubbo.Client`` for that service."
                  + (f"\n\n{doc}" if doc else ""), "    "))
    w("", "    def __init__(self, client: _dubbo.Client) -> None:",
      f'        _dubbo.check_service(client, "{full}", "{name}Stub")')
    for m in methods:
        factory = {"unary": "unary", "client_stream": "client_stream",
                   "server_stream": "server_stream", "bi_stream": "bidi_stream"}[m.kind]
        w(f"        self.__{m.py} = client.{factory}(",
          f'            "{m.name}",',
          f'            _dubbo.serializer({m.request}, "{full}/{m.name}"),',
          f"            {m.response}.FromString,"
          + ("\n            idempotent=True," if m.idempotent else ""),
          "        )")
    for m in methods:
        w("")
        request = (f"request_iterator: _abc.Iterable[{m.request}]" if m.client_streaming
                   else f"request: {m.request}")
        arg = request.split(":", 1)[0]
        if m.server_streaming:
            w(f"    def {m.py}(",
              f"        self, {request}, *, {_KEYWORDS},",
              "        compression: str | None = None,",
              f"    ) -> _dubbo.ResponseStream[{m.response}]:")
            w(*_docstring(m.doc or _default_doc(m), "        "))
            w(f"        return self.__{m.py}({arg}, {_PASS})")
            continue
        call = f"tuple[{m.response}, _dubbo.Call]"
        for with_call, returns in (("_typing.Literal[False] = False", m.response),
                                   ("_typing.Literal[True]", call)):
            w("    @_typing.overload",
              f"    def {m.py}(",
              f"        self, {request}, *, {_KEYWORDS},",
              f"        with_call: {with_call}, compression: str | None = None,",
              f"    ) -> {returns}: ...", "")
        w(f"    def {m.py}(",
          f"        self, {request}, *, {_KEYWORDS},",
          "        with_call: bool = False, compression: str | None = None,",
          f"    ) -> {m.response} | {call}:")
        w(*_docstring(m.doc or _default_doc(m), "        "))
        w("        if with_call:",
          f"            reply, call = self.__{m.py}.with_call({arg}, {_PASS})",
          "            return reply, call",
          f"        response: {m.response} = self.__{m.py}({arg}, {_PASS})",
          "        return response")
    w("", "")


def _default_doc(m: _Method) -> str:
    return {
        "unary": "One request, one reply.",
        "client_stream": "Sends the requests, then returns the one reply.",
        "server_stream": "One request; iterate the result for the replies.",
        "bi_stream": "Sends the requests while the result yields the replies.",
    }[m.kind]


def _servicer(w: _Writer, name: str, full: str, doc: str, methods: list[_Method],
              own: str) -> None:
    w(f"class {name}Servicer:")
    w(*_docstring(f"Serves {full}: subclass it and override the methods; those not "
                  "overridden\nend their calls with UNIMPLEMENTED."
                  + (f"\n\n{doc}" if doc else ""), "    "))
    for m in methods:
        if m.client_streaming:
            request = f"request_iterator: _abc.Iterator[{m.request}]"
        else:
            request = f"request: {m.request}"
        returns = f"_abc.Iterable[{m.response}]" if m.server_streaming else m.response
        w("",
          f"    def {m.py}(",
          f"        self, {request}, context: _dubbo.ServicerContext,",
          f"    ) -> {returns}:")
        if m.doc:
            w(*_docstring(m.doc, "        "))
        w(f'        raise _dubbo.unimplemented("{full}", "{m.name}")')
    w("",
      "    def service_handler(self) -> _dubbo.RpcServiceHandler:",
      '        """This servicer as a service for ``ServiceConfig`` or ``Server.add_service``."""',
      "        return _dubbo.RpcServiceHandler(",
      f'            "{full}",',
      "            [")
    for m in methods:
        w(f"                _dubbo.RpcMethodHandler.{m.kind}(",
          f'                    self.{m.py}, "{m.name}", {m.request}.FromString,',
          f'                    _dubbo.serializer({m.response}, "{full}/{m.name} reply"),',
          "                ),")
    w("            ],",
      f"            file_descriptor={_alias(own)}.DESCRIPTOR,",
      "        )",
      "",
      "",
      f"def add_{name}Servicer_to_server(",
      f"    servicer: {name}Servicer, server: _dubbo.Server, *, group: str | None = None,",
      "    version: str | None = None,",
      ") -> None:")
    w(*_docstring(f"Serve ``servicer`` as {full} on ``server`` (before ``start()``), as "
                  "grpcio's\nfunction of this name does; ``group``/``version`` name a "
                  "Dubbo provider.", "    "))
    w("    server.add_service(servicer.service_handler(), group=group, version=version)",
      "", "")

