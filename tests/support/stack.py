"""The shared stack the ``stack`` fixture (tests/conftest.py) yields: where its router, relays and
echo targets listen, and a connect that carries its token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from polysocket_cli.processes import Proc, Stack
from tests.support.wire_client import Conn, connect


@dataclass
class RunningStack:
    stack: Stack
    router_url: str
    relays: dict[str, Proc]
    token: str  # any origin, loopback targets (the router allowlists 127.0.0.0/8 and ::1)
    targets: dict[str, str] = field(default_factory=dict)

    @property
    def redis_url(self) -> str:
        return self.stack.redis_url

    async def connect(self, http: httpx.AsyncClient, target: str, **kw: Any) -> Conn:
        return await connect(http, self.router_url, target, token=self.token, **kw)
