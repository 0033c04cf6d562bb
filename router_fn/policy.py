"""Pure matching of origins and targets against a token's patterns (no I/O).

Origin patterns: ``*``, an exact origin (``https://app.example.com``, port included when not the
default), or a subdomain wildcard (``https://*.example.com``: any subdomain, not the apex).
Target patterns: ``scheme://host[:port]/path-glob``. Host may be ``*.example.com`` or ``*``; port may be
``*`` (any) and, when absent, means the scheme's default; the path is an fnmatch glob on the
target's path (the query string is not restricted).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

DEFAULT_PORTS = {"ws": 80, "wss": 443, "http": 80, "https": 443}


class PatternError(ValueError):
    """A pattern an operator wrote is malformed (raised at token creation, never at connect)."""


def _host_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` with the default port dropped, lower-cased; None if not an origin."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}:{port}"
    return f"{parts.scheme}://{host}"


def validate_origin_pattern(pattern: str) -> str:
    if pattern == "*":
        return pattern
    probe = pattern.replace("://*.", "://wildcard.", 1)
    if normalize_origin(probe) is None or urlsplit(probe).path not in ("", "/"):
        raise PatternError(f"not an origin pattern: {pattern!r} (use https://app.example.com, "
                           "https://*.example.com or *)")
    return pattern.rstrip("/")


def origin_allowed(patterns: list[str], origin: str | None) -> bool:
    if "*" in patterns:
        return True
    if origin is None:
        return False
    norm = normalize_origin(origin)
    if norm is None:
        return False
    o = urlsplit(norm)
    for pattern in patterns:
        p = urlsplit(pattern.replace("://*.", "://wildcard.", 1))
        if p.scheme != o.scheme or (p.port or DEFAULT_PORTS[p.scheme]) != (o.port or DEFAULT_PORTS[o.scheme]):
            continue
        host_pattern = pattern.split("://", 1)[1].split(":", 1)[0].split("/", 1)[0]
        if _host_matches(host_pattern, o.hostname or ""):
            return True
    return False


@dataclass(frozen=True, slots=True)
class TargetPattern:
    scheme: str
    host: str
    port: int | None  # None = any port
    path_glob: str

    @classmethod
    def parse(cls, pattern: str) -> TargetPattern:
        scheme, sep, rest = pattern.partition("://")
        if not sep or scheme not in ("ws", "wss"):
            raise PatternError(f"target pattern must start with ws:// or wss://: {pattern!r}")
        authority, slash, path = rest.partition("/")
        host, _, port_raw = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
        if authority.startswith("["):  # [v6]:port
            host, _, port_raw = authority[1:].partition("]")
            port_raw = port_raw.lstrip(":")
        if not host:
            raise PatternError(f"target pattern has no host: {pattern!r}")
        port: int | None
        if port_raw == "*":
            port = None
        elif port_raw:
            if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
                raise PatternError(f"bad port in target pattern: {pattern!r}")
            port = int(port_raw)
        else:
            port = DEFAULT_PORTS[scheme]
        return cls(scheme, host.lower(), port, "/" + path if slash else "/*")

    def matches(self, target: str) -> bool:
        t = urlsplit(target)
        if t.scheme != self.scheme or not t.hostname or not _host_matches(self.host, t.hostname):
            return False
        port = t.port or DEFAULT_PORTS[t.scheme]
        if self.port is not None and port != self.port:
            return False
        return fnmatchcase(t.path or "/", self.path_glob)


def target_allowed(patterns: list[str], target: str) -> bool:
    return any(TargetPattern.parse(p).matches(target) for p in patterns)
