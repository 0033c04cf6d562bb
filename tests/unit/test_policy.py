"""Origin and target pattern matching, and token durations (pure)."""

from __future__ import annotations

import pytest

from router_fn.policy import PatternError, TargetPattern, origin_allowed, target_allowed, validate_origin_pattern
from router_fn.tokens import parse_duration


@pytest.mark.parametrize(("patterns", "origin", "allowed"), [
    (["*"], None, True),
    (["*"], "https://evil.example", True),
    (["https://app.example.com"], "https://app.example.com", True),
    (["https://app.example.com"], "https://APP.example.com:443", True),
    (["https://app.example.com"], "http://app.example.com", False),
    (["https://app.example.com"], "https://app.example.com:8443", False),
    (["https://app.example.com"], "https://app.example.com.evil.io", False),
    (["https://app.example.com"], None, False),
    (["https://app.example.com"], "null", False),
    (["https://*.example.com"], "https://a.example.com", True),
    (["https://*.example.com"], "https://a.b.example.com", True),
    (["https://*.example.com"], "https://example.com", False),
    (["https://*.example.com"], "https://badexample.com", False),
    (["http://localhost:3000"], "http://localhost:3000", True),
    (["http://localhost:3000"], "http://localhost:3001", False),
])
def test_origins(patterns: list[str], origin: str | None, allowed: bool) -> None:
    assert origin_allowed(patterns, origin) is allowed


@pytest.mark.parametrize("bad", ["app.example.com", "ftp://a.com", "https://a.com/path", "https://"])
def test_bad_origin_patterns(bad: str) -> None:
    with pytest.raises(PatternError):
        validate_origin_pattern(bad)


@pytest.mark.parametrize(("patterns", "target", "allowed"), [
    (["wss://echo.example.com/*"], "wss://echo.example.com/", True),
    (["wss://echo.example.com/*"], "wss://echo.example.com/a/b?x=1", True),
    (["wss://echo.example.com/*"], "wss://echo.example.com:443/x", True),
    (["wss://echo.example.com/*"], "wss://echo.example.com:8443/x", False),
    (["wss://echo.example.com/*"], "ws://echo.example.com/x", False),
    (["wss://echo.example.com/*"], "wss://echo.example.com.evil.io/x", False),
    (["wss://echo.example.com/chat/*"], "wss://echo.example.com/admin", False),
    (["wss://echo.example.com/chat/*"], "wss://echo.example.com/chat/room1", True),
    (["wss://*.example.com:*/*"], "wss://a.example.com:9999/x", True),
    (["ws://127.0.0.1:*/*"], "ws://127.0.0.1:8080/", True),
    (["ws://[::1]:*/*"], "ws://[::1]:8080/", True),
    (["ws://*:*/*"], "ws://anything:1/", True),
    (["wss://a.com/exact"], "wss://a.com/exact", True),
    (["wss://a.com/exact"], "wss://a.com/exact/more", False),
])
def test_targets(patterns: list[str], target: str, allowed: bool) -> None:
    assert target_allowed(patterns, target) is allowed


@pytest.mark.parametrize("bad", ["https://a.com/*", "a.com/*", "wss:///x", "wss://a.com:99999/*", "wss://a.com:x/"])
def test_bad_target_patterns(bad: str) -> None:
    with pytest.raises(PatternError):
        TargetPattern.parse(bad)


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("15m") == 900
    assert parse_duration("90") == 90
    for bad in ("", "x", "-5s", "0", "5y"):
        with pytest.raises(ValueError):
            parse_duration(bad)
