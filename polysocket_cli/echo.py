"""A WebSocket echo target for demos and tests, with a few scripted behaviours.

Text commands: ``close:CODE:REASON`` closes with that code, ``flood:N`` sends N text messages
``"0"`` .. ``"N-1"``, ``abort`` drops the TCP connection without a closing handshake. Everything
else (text or binary) is echoed. The first offered subprotocol is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def _select_subprotocol(conn: ServerConnection, offered: object) -> object:
    return offered[0] if isinstance(offered, list | tuple) and offered else None


async def _handle(conn: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for msg in conn:
            if isinstance(msg, str):
                if msg.startswith("close:"):
                    _, code, reason = [*msg.split(":", 2), ""][:3]
                    await conn.close(int(code), reason)
                    return
                if msg.startswith("flood:"):
                    for i in range(int(msg[6:])):
                        await conn.send(str(i))
                    continue
                if msg == "abort":
                    if conn.transport is not None:
                        conn.transport.abort()
                    return
            await conn.send(msg)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop where it is built (as the relay and the router): the bench charges the target's CPU
    per message to the relay's figure, and asyncio's own loop costs it about a fifth more."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def run_echo(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    async with serve(_handle, host, port, max_size=16 * 1024 * 1024, compression=None,
                     select_subprotocol=_select_subprotocol) as server:  # type: ignore[arg-type]
        if ready is not None:
            ready.set()
        await server.serve_forever()
