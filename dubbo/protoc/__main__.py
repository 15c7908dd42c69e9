"""``python -m dubbo.protoc``: grpcio-tools' protoc with protoc-gen-dubbo plugged in.

    python -m dubbo.protoc -I protos --python_out=out --dubbo_out=out protos/x.proto

takes protoc's arguments and writes, next to protobuf's ``out/x_pb2.py``, its
``out/x_pb2.pyi`` (so type checkers see the message types; ``--pyi_out`` chooses
another place) and our ``out/x_dubbo.py``. grpcio-tools is the optional extra
``dubbo[protoc]``; with another protoc, use the ``protoc-gen-dubbo`` plugin.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Sequence

__all__ = ["main", "protoc_arguments"]

PLUGIN = "protoc-gen-dubbo"

USAGE = """\
usage: python -m dubbo.protoc [protoc options] PROTO_FILES

  python -m dubbo.protoc -I protos --python_out=out --dubbo_out=out protos/x.proto

writes out/x_pb2.py and out/x_pb2.pyi (protobuf's messages and their types) and
out/x_dubbo.py (GreeterStub, GreeterServicer, add_GreeterServicer_to_server for each
service). Every protoc option works (--grpc_python_out too); --pyi_out defaults to
the --python_out directory, -I to the current directory. Options: python -m dubbo.protoc
--help-protoc. Without grpcio-tools: protoc --plugin=protoc-gen-dubbo ... (any protoc).
"""

MISSING_TOOLS = """\
python -m dubbo.protoc runs the protoc that grpcio-tools ships, and grpcio-tools is not
installed ({error}). Install the extra:

    pip install 'dubbo[protoc]'

or run your own protoc with the plugin: protoc --dubbo_out=DIR ... (protoc-gen-dubbo
must be on PATH, or pass --plugin=protoc-gen-dubbo=PATH).
"""

# protoc flags that take a value, either as --flag=value or as --flag value.
_VALUE_FLAGS = ("--python_out", "--pyi_out", "--dubbo_out", "--dubbo_opt", "--proto_path",
                "--plugin")


def _split(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """protoc's arguments as (flag, value) pairs; file names have flag ""."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("-I"):
            if arg == "-I" and i < len(args):
                pairs.append(("--proto_path", args[i]))
                i += 1
            else:
                pairs.append(("--proto_path", arg[2:] or None))
        elif arg.startswith("--"):
            flag, eq, value = arg.partition("=")
            if not eq and flag in _VALUE_FLAGS and i < len(args):
                value, eq = args[i], "="
                i += 1
            pairs.append((flag, value if eq else None))
        else:
            pairs.append(("", arg))
    return pairs


def _output_dir(value: str) -> str:
    """The directory of ``--x_out=[options:]dir`` (a Windows drive is not options)."""
    options, colon, where = value.partition(":")
    if not colon or (os.name == "nt" and len(options) == 1 and where.startswith(("\\", "/"))):
        return value
    return where


def protoc_arguments(args: Sequence[str], plugin: str | None, well_known: str | None
                     ) -> list[str]:
    """The protoc command line (without argv[0]) for the user's ``args``: adds
    ``--pyi_out`` next to ``--python_out``, our plugin where ``--dubbo_out`` asks for it,
    ``-I.`` when no path was given, and the well-known types' include directory last."""
    pairs = _split(args)
    flags = {flag for flag, _ in pairs}
    out = list(args)
    python_out = [value for flag, value in pairs if flag == "--python_out" and value]
    if python_out and "--pyi_out" not in flags:
        out.append(f"--pyi_out={_output_dir(python_out[-1])}")
    wants_plugin = bool(flags & {"--dubbo_out", "--dubbo_opt"})
    has_plugin = any(flag == "--plugin" and value and (
        value.startswith(PLUGIN + "=") or os.path.basename(value) == PLUGIN)
        for flag, value in pairs)
    if plugin is not None and wants_plugin and not has_plugin:
        out.append(f"--plugin={PLUGIN}={plugin}")
    if "--proto_path" not in flags and "--descriptor_set_in" not in flags:
        out.append("-I.")
    if well_known is not None:
        out.append(f"-I{well_known}")
    return out


def _write_plugin(folder: str) -> str:
    """An executable that runs this Python's plugin on this copy of dubbo: protoc starts
    plugins as programs, and the console script may not be installed (a checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from dubbo.protoc.plugin import main; sys.exit(main())")
    if os.name == "nt":
        path = os.path.join(folder, PLUGIN + ".cmd")
        with open(path, "w") as f:
            f.write(f'@"{sys.executable}" -c "{code}" %*\r\n')
    else:
        path = os.path.join(folder, PLUGIN)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)}\n")
        os.chmod(path, 0o755)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(USAGE)
        return 0 if args else 2
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        sys.stderr.write(MISSING_TOOLS.format(error=exc))
        return 2
    if args == ["--help-protoc"]:
        return int(protoc.main(["grpc_tools.protoc", "--help"]))
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory(prefix="dubbo-protoc-") as folder:
        command = protoc_arguments(args, _write_plugin(folder), well_known)
        return int(protoc.main(["grpc_tools.protoc", *command]))


if __name__ == "__main__":
    sys.exit(main())
