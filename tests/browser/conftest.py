"""Browser fixtures: Debian's Chromium driven by Playwright, and a test page served on the router's origin.

The server side (Valkey, router, relays, echo targets) comes from the ``stack`` fixture in
tests/conftest.py. To try the browser tests against a stack that is already running
(``polysocket dev``), set ``PSTEST_BROWSER_ROUTER=http://localhost:8100`` and
``PSTEST_BROWSER_TARGET=ws://127.0.0.1:8103/``.

Without /usr/bin/chromium the tests fail (``make deps`` installs it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psbrowser import CHROMIUM_ARGS, BrowserStack, PageFactory, browser_url

CHROMIUM = os.environ.get("PSTEST_CHROMIUM", "/usr/bin/chromium")


def _need(condition: bool, why: str) -> None:
    """A missing tool fails the test (never a skip): `make deps` installs all of them."""
    if not condition:
        pytest.fail(f"{why}: run `make deps` (it installs Node packages and Debian's chromium)")


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
def chromium() -> Iterator[Any]:
    """One Chromium per test module. Not per session: sync Playwright keeps an event loop running in
    this thread while it is started, and pytest-asyncio tests in later modules could not run theirs."""
    _need(Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - dev extra missing
        _need(False, "playwright is not installed")
        raise
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context()
    ctx.set_default_timeout(60_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def pages(context: Any, browser_stack: BrowserStack) -> PageFactory:
    return PageFactory(context, browser_stack)
