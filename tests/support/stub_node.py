"""A stand-in relay node for the servers that host one (relay_node.server's own, and uvicorn's in
bench/uvicorn_relay.py): the same lifecycle tests drive both, so they share this one stub."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from relay_node.edge.http1 import Answer, Headers, ProtocolRequest


class StubNode:
    """A ``HostedNode`` (what a server uses of a RelayNode): its one endpoint holds every answer
    until ``release`` is set, its drain (``draining`` once begun) lasts until ``drained`` is set;
    ``events`` records start and stop."""

    constant_headers: list[Headers] = []

    def __init__(self) -> None:
        self.node_id = "stub"
        self.max_body = 1024
        self.events: list[str] = []
        self.release = asyncio.Event()
        self.drained = asyncio.Event()
        self.draining = False
        self.ssl_context: ssl.SSLContext | None = None  # a slot certificate's context, when it has one
        self.request_drain: Callable[[], None] | None = None  # set by the server

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")

    async def drain(self) -> None:
        self.draining = True
        await self.drained.wait()

    async def answer(self, path: str, query: bytes, req: ProtocolRequest) -> Answer:
        await self.release.wait()
        return 200, [], b"done"
