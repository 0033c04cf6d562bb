"""tests/unit is what `make unit` runs with nothing but the virtualenv: a test here that says it needs
processes, a browser, LocalStack or the fault campaign (by its marker) belongs in another folder."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).parent
NEEDS_MORE = ("stack", "browser", "cloud", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    misplaced = [f"{item.nodeid} ({', '.join(m for m in NEEDS_MORE if item.get_closest_marker(m))})"
                 for item in items
                 if item.path.is_relative_to(UNIT_DIR) and any(item.get_closest_marker(m) for m in NEEDS_MORE)]
    if misplaced:
        raise pytest.UsageError("tests/unit holds venv-only tests; move these (tests/README.md):\n  "
                                + "\n  ".join(misplaced))
