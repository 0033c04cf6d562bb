"""bench/PERF_LEDGER.md and the tag comments in the code agree: every tag has its row, every row's
tag sits in the function the row names, and every row's pinning tests and linked results exist.
So a trick cannot be added, moved or dropped without its row following it."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "bench" / "PERF_LEDGER.md"
PACKAGES = ("polysocket_core", "polysocket_redis", "router_fn", "relay_node", "polysocket_cli")
TAG = re.compile(r"#\s" + r"perf:\s*([a-z0-9-]+)")  # written in two pieces: this file carries no tag
ROW = re.compile(r"^\| `([a-z0-9-]+)` \|")
WHERE = re.compile(r"`([\w/]+\.py)::([\w.]+)`")
TEST = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
LINK = re.compile(r"\]\((results/[\w.-]+\.md)(?:#[\w-]*)?\)")


@dataclass(frozen=True)
class Row:
    name: str
    path: str
    qualname: str
    tests: tuple[tuple[str, str], ...]
    links: tuple[str, ...]


@cache
def rows() -> dict[str, Row]:
    found: dict[str, Row] = {}
    for line in LEDGER.read_text().splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        cells = line.split(" | ")
        where = WHERE.search(cells[2])
        assert where is not None, f"row {m[1]}: no `file.py::function` in its third column"
        assert m[1] not in found, f"row {m[1]} twice"
        found[m[1]] = Row(m[1], where[1], where[2], tuple(TEST.findall(line)), tuple(LINK.findall(line)))
    assert found, "no rows parsed from the ledger"
    return found


@cache
def tags() -> dict[str, list[tuple[str, int]]]:
    """Tag name -> (file relative to the root, line number) for each tag in the shipped packages."""
    found: dict[str, list[tuple[str, int]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for name in TAG.findall(line):
                    found.setdefault(name, []).append((str(path.relative_to(ROOT)), number))
    return found


def span(path: str, qualname: str) -> tuple[int, int]:
    """First and last line of a function, class or module-level assignment named ``qualname``."""
    tree = ast.parse((ROOT / path).read_text())
    body: list[ast.stmt] = tree.body
    node: ast.stmt | None = None
    for part in qualname.split("."):
        node = next((n for n in body if (isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                                         and n.name == part)
                     or (isinstance(n, ast.Assign | ast.AnnAssign)
                         and part in {t.id for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                                      if isinstance(t, ast.Name)})), None)
        assert node is not None, f"{path}: no {qualname}"
        body = getattr(node, "body", [])
    assert node is not None and node.end_lineno is not None
    return node.lineno, node.end_lineno


def test_every_tag_has_its_row_and_one_tag_each() -> None:
    assert set(tags()) == set(rows()), (f"tags without a row: {sorted(set(tags()) - set(rows()))}; "
                                        f"rows without a tag: {sorted(set(rows()) - set(tags()))}")
    assert all(len(places) == 1 for places in tags().values()), {n: p for n, p in tags().items() if len(p) > 1}


def test_every_rows_tag_is_in_the_function_it_names() -> None:
    for row in rows().values():
        [(path, line)] = tags()[row.name]
        first, last = span(row.path, row.qualname)
        assert path == row.path and first <= line <= last, (
            f"{row.name}: tagged at {path}:{line}, the ledger says {row.path}::{row.qualname} ({first}-{last})")


def test_every_row_is_pinned_by_tests_that_exist() -> None:
    for row in rows().values():
        assert row.tests, f"{row.name}: no `tests/...py::test_name` pins it"
        for path, name in row.tests:
            tree = ast.parse((ROOT / path).read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            assert name in defined, f"{row.name}: {path} has no {name}"


def test_every_linked_result_exists() -> None:
    for row in rows().values():
        for link in row.links:
            assert (LEDGER.parent / link).is_file(), f"{row.name}: {link} is not in bench/"
