"""The socket's receiver: whoever collects its messages now, a waiting poll or an open stream.

A socket has at most one receiver (the newest request wins) and speaks to it through two calls, so
it never asks which kind it holds:

- ``wake()``: messages were queued, or the socket closed or was freed;
- ``replaced()``: a newer request took the socket over.

A waiting poll answers on either (``PollReceiver``); a stream writes what is new on ``wake`` and
ends on ``replaced`` (``relay_node.sockets.stream.SocketStream``). The idle sweep spares a socket
that has a receiver.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Receiver(Protocol):
    def wake(self) -> None:
        """Messages were queued, or the socket closed or was freed: collect them now."""

    def replaced(self) -> None:
        """A newer request is the socket's receiver now: let go."""


class PollReceiver:
    """A ``/poll`` waiting for messages: either call answers it (its future resolves, the poll
    returns what the buffer holds then)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def wake(self) -> None:
        fut = self.future
        if not fut.done():
            fut.set_result(None)

    replaced = wake  # a superseded poll answers at once, with what there is
