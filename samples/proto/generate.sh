#!/usr/bin/env bash
# Regenerates greeter_pb2.py, greeter_pb2.pyi (protobuf's) and greeter_dubbo.py (ours)
# from greeter.proto.
#
# The committed files come from grpcio-tools 1.85.1 (the test extra's).
# greeter_dubbo.py itself depends on no protobuf version.
set -euo pipefail
cd "$(dirname "$0")"
python -m dubbo.protoc -I. --python_out=. --dubbo_out=. greeter.proto
# protobuf's gencode refuses a runtime older than the protoc that wrote it (7.35.1 here);
# the samples run on every protobuf the package allows (4.21+), so that check is dropped:
# what remains (the descriptor builder) has been protobuf's gencode API since 3.20.
sed -i -e '/^from google.protobuf import runtime_version/d' \
       -e '/^_runtime_version.ValidateProtobufRuntimeVersion(/,/^)/d' greeter_pb2.py
