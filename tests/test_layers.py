"""Issue 9's layering rule, checked on the source: only dubbo/transport/ knows h2 (and
its hpack and hyperframe), and no module above it reaches into a transport's h2
connection (``.conn``). Read with ``ast``, so imports inside functions count too."""

from __future__ import annotations

import ast
import pathlib

import dubbo

PACKAGE = pathlib.Path(dubbo.__file__).parent
ROOT = PACKAGE.parent
H2_MODULES = {"h2", "hpack", "hyperframe"}
# Modules still being moved onto the transport's stream operations, and by whom. An
# entry that no longer breaks the rule fails the test too: remove it then.
PENDING: dict[str, str] = {}


def _offences(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in H2_MODULES:
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Attribute) and node.attr == "conn":
            found.append(f"line {node.lineno}: uses .conn (the transport's h2 connection)")
    return found


def _modules_above_the_transport() -> list[pathlib.Path]:
    transport = PACKAGE / "transport"
    return sorted(p for p in PACKAGE.rglob("*.py") if transport not in p.parents)


def test_the_walk_sees_the_whole_package():
    modules = {p.relative_to(ROOT).as_posix() for p in _modules_above_the_transport()}
    for expected in ("dubbo/server/server.py", "dubbo/server/http_unary.py",
                     "dubbo/server/http2.py", "dubbo/call/server_stream.py",
                     "dubbo/cli/main.py"):
        assert expected in modules
    assert not any(m.startswith("dubbo/transport/") for m in modules)


def test_the_check_catches_an_h2_import_and_a_conn_access(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\n"
                      "def f(transport):\n"
                      "    from h2.errors import ErrorCodes\n"
                      "    import hpack\n"
                      "    return transport.conn.send_headers\n")
    assert _offences(sample) == ["line 3: imports h2.errors", "line 4: imports hpack",
                                 "line 5: uses .conn (the transport's h2 connection)"]


def test_no_module_outside_the_transport_touches_h2():
    offenders = {}
    for path in _modules_above_the_transport():
        found = _offences(path)
        if found:
            offenders[path.relative_to(ROOT).as_posix()] = found
    unexpected = {k: v for k, v in offenders.items() if k not in PENDING}
    assert not unexpected, f"only dubbo/transport/ may touch h2: {unexpected}"
    done = sorted(set(PENDING) - set(offenders))
    assert not done, f"{done} no longer touch h2: remove them from PENDING"
