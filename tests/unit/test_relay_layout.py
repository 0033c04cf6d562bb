"""The shape of ``relay_node`` (issue 16): its import graph has no cycle and is at most five levels
deep, and the socket tells its receivers apart by no ``isinstance``.

Every import statement counts, wherever it stands: at module level, under ``TYPE_CHECKING`` and
inside functions (a lazy import is still a dependency). A module that imports no other module of
``relay_node`` is level 1; a module is one level above the deepest module it imports. Parsed with
``ast``, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "relay_node"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
MAX_LEVELS = 5


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``relay_node`` modules ``name`` imports (a ``from pkg import sub`` names ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) for name, path in mods.items()}


def levels(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's level; raises on a cycle (naming the modules on it)."""
    level: dict[str, int] = {}
    visiting: list[str] = []

    def visit(name: str) -> int:
        if name in level:
            return level[name]
        if name in visiting:
            raise AssertionError("import cycle: " + " -> ".join([*visiting[visiting.index(name):], name]))
        visiting.append(name)
        level[name] = 1 + max((visit(dep) for dep in edges[name]), default=0)
        visiting.pop()
        return level[name]

    for name in sorted(edges):
        visit(name)
    return level


def test_the_graph_is_read() -> None:
    """The parser sees real edges (else the checks below could not fail)."""
    edges = graph()
    assert "relay_node.sockets.socket" in edges["relay_node.sockets.table"]
    assert "relay_node.sockets.socket" in edges["relay_node.sockets.stream"]  # a TYPE_CHECKING import
    assert "relay_node.control.aws.slotnode" in edges["relay_node.node"]  # a lazy import
    assert "relay_node.sockets.memory" in edges["relay_node.sockets.table"]  # from . import memory


def test_a_cycle_is_found() -> None:
    with pytest.raises(AssertionError, match="import cycle: a -> b -> a"):
        levels({"a": {"b"}, "b": {"a"}})
    assert levels({"a": {"b"}, "b": {"c"}, "c": set()}) == {"a": 3, "b": 2, "c": 1}


def test_relay_node_has_no_import_cycle_and_at_most_five_levels() -> None:
    level = levels(graph())
    deepest = max(level.values())
    assert deepest <= MAX_LEVELS, sorted(((v, k) for k, v in level.items()), reverse=True)[:8]


def test_no_isinstance_on_the_receiver() -> None:
    """The socket speaks to its receiver (a waiting poll, an open stream) through ``Receiver``."""
    for path in (ROOT / "sockets").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                assert not names & {"SocketStream", "Future", "PollReceiver", "Receiver"}, (path, ast.unparse(node))
