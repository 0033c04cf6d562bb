"""The docs name tests as proof (docs/guarantees.md: promise → test → number); a renamed or moved test
must not leave a promise pointing at nothing. Every ``tests/….py`` path the docs mention exists, and
every ``path::name`` names a test function defined in that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "tests").glob("**/README.md")),
        ROOT / "bench" / "README.md"]
PATH = re.compile(r"(tests/[A-Za-z0-9_/]+\.py)(?:::([A-Za-z0-9_]+))?")


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for m in PATH.finditer(doc.read_text(encoding="utf-8")):
            found.append((doc.relative_to(ROOT).as_posix(), m.group(1), m.group(2)))
    return found


def test_the_docs_name_tests_that_exist() -> None:
    refs = references()
    assert len(refs) > 50  # the guarantees table alone names far more: the scan itself works
    missing = [(doc, path) for doc, path, _ in refs if not (ROOT / path).is_file()]
    assert missing == []


def test_every_named_test_function_is_defined_in_its_file() -> None:
    undefined = []
    for doc, path, name in references():
        if name is None or not (ROOT / path).is_file():
            continue
        if not re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", (ROOT / path).read_text(encoding="utf-8"), re.M):
            undefined.append((doc, f"{path}::{name}"))
    assert undefined == []
