"""Fuzzing: hypothesis properties of the pure core, hostile and raw requests against a real relay
and router, and a JSONP callback-injection corpus. Sized by the same profile as tests/faults
(``PSTEST_FAULTS=full`` for the long run)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Profile, current_profile


@pytest.fixture(scope="session")
def profile() -> Profile:
    return current_profile()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault campaign (tests/faults, tests/fuzz); "
                            "PSTEST_FAULTS=full for the long profile")
