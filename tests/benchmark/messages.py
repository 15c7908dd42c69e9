"""The protobuf messages of the ``bench.PbBench`` service, built at import time.

The classes come from protobuf's own runtime (``message_factory``), the same classes a
generated ``*_pb2.py`` holds, so every system pays its normal protobuf cost; building
them here instead of checking in generated code keeps the benchmark independent of the
installed protobuf version. The equivalent ``.proto``::

    syntax = "proto3";
    package bench;
    message HelloRequest { string name = 1; }
    message HelloReply { string message = 1; }
    message StreamRequest { uint32 count = 1; string name = 2; }
    message Count { uint64 count = 1; }
    message Blob { bytes data = 1; }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto
_MESSAGES = {
    "HelloRequest": [("name", _FIELD.TYPE_STRING)],
    "HelloReply": [("message", _FIELD.TYPE_STRING)],
    "StreamRequest": [("count", _FIELD.TYPE_UINT32), ("name", _FIELD.TYPE_STRING)],
    "Count": [("count", _FIELD.TYPE_UINT64)],
    "Blob": [("data", _FIELD.TYPE_BYTES)],
}


def _build() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name="bench/bench.proto", package="bench",
                                               syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for number, (field_name, field_type) in enumerate(fields, start=1):
            message.field.add(name=field_name, number=number, type=field_type,
                              label=_FIELD.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"bench.{name}"))
            for name in _MESSAGES}


_CLASSES = _build()
HelloRequest: Any = _CLASSES["HelloRequest"]
HelloReply: Any = _CLASSES["HelloReply"]
StreamRequest: Any = _CLASSES["StreamRequest"]
Count: Any = _CLASSES["Count"]
Blob: Any = _CLASSES["Blob"]

NAME = "dubbo-benchmark"  # HelloRequest.name of every small protobuf message
SMALL_SIZE = len(HelloRequest(name=NAME).SerializeToString())
