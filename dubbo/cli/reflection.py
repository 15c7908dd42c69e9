"""A server reflection client on ``dubbo.Client``: which services a server has, and
the .proto descriptors of their methods and messages (``grpc.reflection.v1``, falling
back to ``v1alpha`` for servers that only speak that).

Descriptors arrive as serialized ``FileDescriptorProto``s; files they import that did
not come along are asked for by name, and the lot goes into a ``DescriptorPool`` of
its own, whose message classes encode and decode the calls the CLI makes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from ..client import Client
from ..configs import ReferenceConfig
from ..services._protobuf import message_class
from ..status import RpcError, StatusCode
from ..wire.metadata import MetadataLike

__all__ = ["ReflectionClient", "build_pool"]

PACKAGES = ("grpc.reflection.v1", "grpc.reflection.v1alpha")
MAX_FILES = 1000  # a server that keeps naming new imports is cut off here


def _default_pool_file(name: str) -> Any:
    """A file protobuf itself knows (its well-known types), as a FileDescriptorProto."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    if name.startswith("google/protobuf/") and name.endswith(".proto"):
        module = "google.protobuf." + name[len("google/protobuf/"):-len(".proto")] + "_pb2"
        try:
            importlib.import_module(module.replace("/", "."))
        except ImportError:
            pass
    try:
        found = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(proto)
    return proto


def build_pool(files: dict[str, Any]) -> Any:
    """A DescriptorPool holding ``files`` (FileDescriptorProtos by name), each added
    after what it imports; imports missing from ``files`` come from protobuf's own."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str, depth: int = 0) -> None:
        if name in added or depth > MAX_FILES:
            return
        added.add(name)
        proto = files.get(name) or _default_pool_file(name)
        if proto is None:
            raise LookupError(f"the server did not send {name}, which its files import")
        for dependency in proto.dependency:
            add(dependency, depth + 1)
        pool.Add(proto)

    for name in list(files):
        add(name)
    return pool


class ReflectionClient:
    """Asks one server about its services. Not thread-safe; ``close()`` when done."""

    def __init__(self, host: str, port: int, *, timeout: float | None = 10.0,
                 metadata: MetadataLike | None = None, connect_timeout: float = 5.0,
                 ssl_context: Any = None) -> None:
        self.address = f"{host}:{port}"
        self.timeout = timeout
        self.metadata = metadata
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self._clients: dict[str, Client] = {}
        self._package: str | None = None  # the version that answered
        self.files: dict[str, Any] = {}  # FileDescriptorProtos received, by name

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> ReflectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, package: str) -> Client:
        client = self._clients.get(package)
        if client is None:
            reference = ReferenceConfig.from_url(
                f"tri://{self.address}/{package}.ServerReflection?cluster=failfast")
            client = self._clients[package] = Client(
                reference, connect_timeout=self.connect_timeout, ssl_context=self.ssl_context)
        return client

    def _exchange(self, requests: list[dict[str, Any]]) -> list[Any]:
        """Send ``requests`` (ServerReflectionRequest fields) on one stream; the
        responses, in order. Tries v1, then v1alpha if the server lacks v1."""
        packages = (self._package,) if self._package else PACKAGES
        error: RpcError | None = None
        for package in packages:
            request_cls = message_class(f"{package}.ServerReflectionRequest")
            response_cls = message_class(f"{package}.ServerReflectionResponse")
            call = self._client(package).bidi_stream(
                "ServerReflectionInfo", lambda m: bytes(m.SerializeToString()),
                response_cls.FromString)
            try:
                responses = list(call(iter([request_cls(**r) for r in requests]),
                                      timeout=self.timeout, metadata=self.metadata))
            except RpcError as exc:
                if exc.code is StatusCode.UNIMPLEMENTED:
                    error = exc
                    continue
                raise
            self._package = package
            return responses
        assert error is not None
        raise RpcError(StatusCode.UNIMPLEMENTED,
                       f"the server does not serve reflection ({error.details})")

    @staticmethod
    def _check(response: Any) -> Any:
        kind = response.WhichOneof("message_response")
        if kind == "error_response":
            error = response.error_response
            raise RpcError(StatusCode(error.error_code) if 0 < error.error_code < 17
                           else StatusCode.UNKNOWN, error.error_message)
        return response

    def list_services(self) -> list[str]:
        """The names of the services the server lists."""
        (response,) = self._exchange([{"list_services": "*"}])
        return sorted(s.name for s in self._check(response).list_services_response.service)

    def _add_files(self, response: Any) -> None:
        from google.protobuf import descriptor_pb2

        for data in self._check(response).file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(data)
            self.files.setdefault(proto.name, proto)

    def _fetch_imports(self) -> None:
        """Ask for every imported file that has not arrived, until none is missing."""
        asked: set[str] = set()
        while len(self.files) < MAX_FILES:
            missing = sorted({d for f in self.files.values() for d in f.dependency
                              if d not in self.files and d not in asked})
            if not missing:
                return
            asked.update(missing)
            for name, response in zip(missing, self._exchange(
                    [{"file_by_filename": name} for name in missing]), strict=False):
                try:
                    self._add_files(response)
                except RpcError:
                    if _default_pool_file(name) is None:  # not a well-known type either
                        raise

    def pool_for(self, symbols: Iterable[str]) -> Any:
        """A DescriptorPool knowing each symbol (a service, method or message full
        name) and everything it refers to. RpcError NOT_FOUND for an unknown symbol."""
        for symbol in symbols:
            (response,) = self._exchange([{"file_containing_symbol": symbol}])
            self._add_files(response)
        self._fetch_imports()
        return build_pool(self.files)
