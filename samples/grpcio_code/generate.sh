#!/usr/bin/env bash
# Regenerates greeter_pb2_grpc.py (grpcio-tools' own output, unedited) from
# ../proto/greeter.proto; greeter_pb2.py stays in ../proto (see its generate.sh).
set -euo pipefail
cd "$(dirname "$0")"
python -m grpc_tools.protoc -I../proto --grpc_python_out=. ../proto/greeter.proto
