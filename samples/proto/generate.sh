#!/usr/bin/env bash
# Regenerates greeter_pb2.py from greeter.proto.
#
# Version pin: greeter_pb2.py was generated with grpcio-tools 1.85.1, whose bundled
# protoc emits gencode for protobuf 7.35.1; that gencode refuses to import on an older
# runtime, hence protobuf>=7.35.1,<8 in setup.cfg. Regenerate with the grpcio-tools from
# the test extra (pip install -e '.[test]') so the output matches the pinned runtime.
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I. --python_out=. greeter.proto
