"""In-process WebSocket targets for the fault tests (loopback, bounded)."""

from __future__ import annotations

import asyncio
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from polysocket_cli.processes import free_port


class EchoTarget:
    """Echoes every message; records each connection's close code, and the text messages it
    received by their tag (what comes before the first ':')."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.closes: list[int | None] = []
        self.received: dict[str, list[str]] = {}
        self.open = 0

    async def handler(self, conn: ServerConnection) -> None:
        self.open += 1
        try:
            async for msg in conn:
                if isinstance(msg, str):
                    self.received.setdefault(msg.partition(":")[0], []).append(msg)
                await conn.send(msg)
        except ConnectionClosed:
            pass
        finally:
            self.open -= 1
            self.closes.append(conn.close_code)

    async def wait_closes(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.closes) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
