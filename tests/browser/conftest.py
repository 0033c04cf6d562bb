"""Browser fixtures: the engines (engines.py), and a test page served on the router's origin.

Every test that uses a page runs once per engine: Chromium (Playwright), Firefox ESR and WebKitGTK
(WebDriver). ``--engine NAME`` (repeatable) or ``PSTEST_ENGINES=chromium,firefox`` narrows the run;
differences.py keeps a test off an engine that cannot run it, with its reason (deselected, not skipped).

The server side (Valkey, router, relays, echo targets) comes from the ``stack`` fixture in
tests/conftest.py. To try the browser tests against a stack that is already running
(``polysocket dev``), set ``PSTEST_BROWSER_ROUTER=http://localhost:8100`` and
``PSTEST_BROWSER_TARGET=ws://127.0.0.1:8103/``.

Without an engine's browser the tests fail (``make deps`` installs them all).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from differences import exclusion
from engines import ENGINES, Browser, BrowserContext, LaunchOptions
from psbrowser import BrowserStack, PageFactory, browser_url


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--engine", action="append", choices=sorted(ENGINES), default=None,
                     help="browser engine(s) for tests/browser (default: PSTEST_ENGINES, else all)")


def selected_engines(config: pytest.Config) -> list[str]:
    chosen: list[str] | None = config.getoption("--engine")
    if chosen:
        return chosen
    env = os.environ.get("PSTEST_ENGINES", "")
    names = [n.strip() for n in env.split(",") if n.strip()] or list(ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise pytest.UsageError(f"PSTEST_ENGINES: unknown engine(s) {unknown}; known: {sorted(ENGINES)}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", selected_engines(metafunc.config), scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec else None
        test = f"{Path(str(item.fspath)).name}::{getattr(item, 'originalname', item.name)}"
        params = tuple(callspec.params.values()) if callspec else ()
        (dropped if engine and exclusion(test, engine, params) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def browser_stack(request: pytest.FixtureRequest) -> BrowserStack:
    router = os.environ.get("PSTEST_BROWSER_ROUTER")
    if router:
        target = os.environ.get("PSTEST_BROWSER_TARGET", "ws://127.0.0.1:8103/")
        return BrowserStack(
            router=browser_url(router),
            targets={"env": target},
            token=os.environ.get("PSTEST_BROWSER_TOKEN", ""),
        )
    stack: Any = request.getfixturevalue("stack")
    token = str(getattr(stack, "token", "") or "")
    return BrowserStack(router=browser_url(stack.router_url), targets=dict(stack.targets), token=token)


@pytest.fixture(scope="module")
def browser(engine: str) -> Iterator[Browser]:
    """One browser per engine and test module. Not per session: sync Playwright keeps an event
    loop running in this thread while it is started, and pytest-asyncio tests in later modules
    could not run theirs."""
    missing = ENGINES[engine].missing()
    if missing:  # a missing tool fails the test (never a skip): `make deps` installs all of them
        pytest.fail(f"{engine}: {', '.join(missing)} not installed: run `make deps`")
    with ENGINES[engine].launch(LaunchOptions()) as launched:
        yield launched


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def pages(context: BrowserContext, browser_stack: BrowserStack) -> PageFactory:
    return PageFactory(context, browser_stack)
