#!/usr/bin/env bash
# .proto -> Python: writes gen/hello/v1/greeter_pb2.py and greeter_pb2.pyi (protobuf's
# messages and their types) and gen/hello/v1/greeter_dubbo.py (GreeterStub,
# GreeterServicer, add_GreeterServicer_to_server). Needs grpcio-tools: pip install 'dubbo[protoc]'.
#
# The committed files come from grpcio-tools 1.85.1 (protoc 7.35.1, gencode for
# protobuf 7.35.1+), the version in the test extra.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p gen
python -m dubbo.protoc -I protos --python_out=gen --dubbo_out=gen protos/hello/v1/greeter.proto
