"""The browser library (``polysocket.js`` and its minified build) served by the router itself, at
``/client/{name}``, from the ``polysocket_client`` package the router was installed or packaged with.

Why the router and not a bucket: a page already names the router (``data-router``), so the library
comes from the one URL it knows, over the HTTPS API Gateway gives it, with nothing more to deploy
or make public; and the library always matches the router's protocol, since both come from one
build. What it costs, an invocation per page load, the cache headers below bound: browsers and any
CDN keep the file an hour, then revalidate with ``If-None-Match`` and get a bodiless 304
(docs/deploy.md).

Files are read once, at the first request (nothing at import time: the Lambda's cold start stays
free of I/O), and kept with their ETag (a hash of the bytes, so it changes exactly when they do).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

# The library only: the demo and conformance pages belong to `polysocket dev` (static_dir).
LIBRARY_FILES = ("polysocket.js", "polysocket.min.js")
CACHE_CONTROL = "public, max-age=3600"
CONTENT_TYPE = "text/javascript; charset=utf-8"


@dataclass(frozen=True, slots=True)
class LibraryFile:
    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> LibraryFile:
        return cls(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def headers(self) -> dict[str, str]:
        # Any page may load it (a script tag needs no CORS; a fetch-based loader does).
        return {"content-type": CONTENT_TYPE, "cache-control": CACHE_CONTROL, "etag": self.etag,
                "access-control-allow-origin": "*", "x-content-type-options": "nosniff"}

    def matches(self, if_none_match: str | None) -> bool:
        """RFC 9110 13.1.2: a list of entity tags, weak comparison, or ``*``."""
        if not if_none_match:
            return False
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or self.etag in tags


class ClientLibrary:
    """The library's files by name, loaded from the package at first use."""

    def __init__(self, package: str = "polysocket_client") -> None:
        self.package = package
        self._files: dict[str, LibraryFile] | None = None

    def get(self, name: str) -> LibraryFile:
        if self._files is None:
            root = resources.files(self.package)
            self._files = {n: LibraryFile.of(root.joinpath(n).read_bytes()) for n in LIBRARY_FILES}
        return self._files[name]
