"""The admission seam: who may open which socket. ``/connect`` calls ``admit`` before picking a node.

The data-path release admits every well-formed request (``OpenAdmission``); token, origin, target
policy, SSRF guard and limits plug in here without touching the rest of the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from polysocket_core.wire import ConnectParams


@dataclass(frozen=True, slots=True)
class ConnectContext:
    """What the router knows about the caller besides the query parameters."""

    client_ip: str
    origin: str | None  # Origin header, else the origin of Referer, else None
    user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Admitted:
    meta: dict[str, str] = field(default_factory=dict)  # recorded on the socket (token id, origin, ...)


class Admission(Protocol):
    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        """Return the facts to record on the socket, or raise a ``PolysocketError``."""
        ...


class OpenAdmission:
    """Admits everything that parsed: for local development only."""

    async def admit(self, params: ConnectParams, ctx: ConnectContext) -> Admitted:
        meta = {"caller": params.caller}
        if ctx.origin:
            meta["origin"] = ctx.origin
        return Admitted(meta)
