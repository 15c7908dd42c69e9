#!/usr/bin/env bash
# .proto -> Python: writes gen/hello/v1/greeter_pb2.py and greeter_pb2.pyi (protobuf's
# messages and their types) and gen/hello/v1/greeter_dubbo.py (GreeterStub,
# GreeterServicer, add_GreeterServicer_to_server). Needs grpcio-tools: pip install 'dubbo[protoc]'.
#
# The committed files come from grpcio-tools 1.85.1 (the test extra's).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p gen
python -m dubbo.protoc -I protos --python_out=gen --dubbo_out=gen protos/hello/v1/greeter.proto
# protobuf's gencode refuses a runtime older than the protoc that wrote it (7.35.1 here);
# the samples run on every protobuf the package allows (4.21+), so that check is dropped:
# what remains (the descriptor builder) has been protobuf's gencode API since 3.20.
sed -i -e '/^from google.protobuf import runtime_version/d' \
       -e '/^_runtime_version.ValidateProtobufRuntimeVersion(/,/^)/d' gen/hello/v1/greeter_pb2.py
