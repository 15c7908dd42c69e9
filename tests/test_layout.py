"""The package's layers hold (docs/architecture.md): the wire and call layers do no I/O
and import nothing above them, and every module imports on its own (no cycle that works
only in one import order). That only dubbo.transport touches h2: tests/test_layers.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dubbo"
# Sans-I/O layers: no sockets, threads, selectors or timers of their own.
IO_MODULES = {"socket", "ssl", "selectors", "threading", "select", "asyncio", "queue"}
# deadline clamps a timeout to threading.TIMEOUT_MAX (it reads a constant, starts nothing).
ALLOWED = {("dubbo.wire.deadline", "threading")}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path) -> set[str]:
    """Absolute names of what ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ["dubbo.wire", "dubbo.call"])
def test_the_sans_io_layers_do_no_io_and_import_nothing_above_them(layer: str) -> None:
    above = ("dubbo.transport", "dubbo.server", "dubbo.client", "dubbo.registry",
             "dubbo.bootstrap", "dubbo.cluster")
    for name, path in _modules():
        if not name.startswith(layer):
            continue
        imported = _imports(path)
        assert not {i for i in imported if i.split(".")[0] in IO_MODULES
                    and (name, i) not in ALLOWED}, name
        assert not [i for i in imported if i.startswith(above)], name


def test_every_module_imports_on_its_own() -> None:
    # Each in a fresh interpreter, so a cycle that works only when another module was
    # imported first (as dubbo.metadata and dubbo/__init__ once did) shows up here.
    names = [name for name, _ in _modules()
             if not name.startswith("dubbo.protoc") and name != "dubbo.__main__"]
    script = "import importlib, sys\nfor n in sys.argv[1:]:\n" \
             "    for m in [k for k in sys.modules if k == 'dubbo' or k.startswith('dubbo.')]:\n" \
             "        del sys.modules[m]\n" \
             "    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True,
                          text=True, timeout=120, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
