"""``protoc-gen-dubbo``: the protoc plugin (CodeGeneratorRequest on stdin, response on
stdout). Needs only protobuf, so it works with any protoc:

    protoc -I protos --python_out=out --pyi_out=out --dubbo_out=out protos/x.proto
"""

from __future__ import annotations

import sys
from typing import BinaryIO, TextIO

from google.protobuf.compiler import plugin_pb2
from google.protobuf.message import DecodeError

from .._version import __version__
from .generator import generate

__all__ = ["main", "run"]

USAGE = """\
protoc-gen-dubbo is a protoc plugin: protoc runs it, it is not run by hand.

    protoc -I protos --python_out=out --pyi_out=out --dubbo_out=out protos/x.proto
    python -m dubbo.protoc -I protos --python_out=out --dubbo_out=out protos/x.proto

writes out/x_dubbo.py (typed stubs and servicers) next to protobuf's out/x_pb2.py.
"""


def run(stdin: BinaryIO, stdout: BinaryIO, stderr: TextIO) -> int:
    """One plugin call on the given streams; the exit status."""
    data = stdin.read()
    try:
        request = plugin_pb2.CodeGeneratorRequest.FromString(data)
    except DecodeError as exc:
        stderr.write(f"protoc-gen-dubbo: stdin is not a CodeGeneratorRequest ({exc})\n"
                     + USAGE)
        return 1
    stdout.write(generate(request).SerializeToString())
    stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script: protoc passes no arguments and pipes the request in."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        print(f"protoc-gen-dubbo {__version__}")
        return 0
    if args or sys.stdin.isatty():
        stream = sys.stdout if args in (["-h"], ["--help"]) else sys.stderr
        stream.write(USAGE)
        return 0 if stream is sys.stdout else 2
    return run(sys.stdin.buffer, sys.stdout.buffer, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
