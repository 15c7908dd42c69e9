#!/usr/bin/env bash
# Regenerates greeter_pb2.py, greeter_pb2.pyi (protobuf's) and greeter_dubbo.py (ours)
# from greeter.proto.
#
# Version pin: the committed files were generated with grpcio-tools 1.85.1, whose bundled
# protoc emits gencode for protobuf 7.35.1; that gencode refuses to import on an older
# runtime, hence protobuf>=7.35.1,<8 in setup.cfg. Regenerate with the grpcio-tools from
# the test extra (pip install -e '.[test]') so the output matches the pinned runtime.
# greeter_dubbo.py itself depends on no protobuf version.
set -euo pipefail
cd "$(dirname "$0")"
python -m dubbo.protoc -I. --python_out=. --dubbo_out=. greeter.proto
