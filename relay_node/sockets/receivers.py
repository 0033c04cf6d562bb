"""The socket's receiver: whoever collects its messages now, a waiting poll or an open stream;
and the connection its messages last went out on, the only one allowed to hold them unsent.

A socket has at most one receiver (the newest request wins) and speaks to it through two calls, so
it never asks which kind it holds:

- ``wake()``: messages were queued, or the socket closed or was freed;
- ``replaced()``: a newer request took the socket over.

A waiting poll answers on either (``PollReceiver``), a superseded one with no messages (they are
the newer receiver's); a stream writes what is new on ``wake`` and ends on ``replaced``
(``relay_node.sockets.stream.SocketStream``). The idle sweep spares a socket that has a receiver.

Receive-side memory is bounded per socket, not per connection (issue 21): each stream or poll
hands the socket's messages to a connection (its ``Carrier``), and an answer the client does not
read stays queued in that connection's transport long after a newer request replaced it (a
keep-alive interval, then another until the stuck close is aborted), so a client that opened a
new connection for each stream or poll held one budget per connection. When a newer stream or poll
takes the socket over from another connection, the connection before it is therefore **cut**
(its transport aborted) if it still holds more than ``SLACK_BYTES`` unsent (``supersede``). Of
the two ways the issue offered, cutting rather than counting and capping the unsent bytes per
socket, because:

- it loses nothing: writing acknowledges nothing, so every message in a cut answer is written
  again to the newer receiver (which gets them anyway, and a client that reads drops the copies
  by seq); the answer cut was one its client had given up on by asking again;
- it costs the data path nothing: one look at the previous connection's write buffer when a
  receiver arrives, no count kept per write and no count to settle as the transport drains;
- it bounds every client the same way: at most one connection per socket (the newest receiver's)
  holds more than the slack, and no superseded one gets more of this socket's bytes (a replaced
  stream writes only its terminal chunk, a superseded poll answers empty).

The slack is the transport's usual high-water mark: a client that reads keeps less than that queued,
so a normal reconnection (an EventSource after its stream ended, the next poll) never cuts a
connection that is being read. A large answer still being downloaded when a newer request of its
socket arrives (a client that timed out and asked again, or two receivers racing) is cut: the
newer request carries the same messages, as it did before, only the copy nobody waits for goes.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

SLACK_BYTES = 64 * 1024  # asyncio's (and uvloop's) default write high-water mark


class Receiver(Protocol):
    def wake(self) -> None:
        """Messages were queued, or the socket closed or was freed: collect them now."""

    def replaced(self) -> None:
        """A newer request is the socket's receiver now: let go."""


class Carrier(Protocol):
    """The connection an answer with a socket's messages goes out on (``relay_node.edge.http1``'s)."""

    def unsent_bytes(self) -> int:
        """Bytes written to the connection that the client has not taken yet (its write buffer)."""
        ...

    def cut(self) -> None:
        """Drop the connection now, with whatever it still holds."""
        ...


def supersede(previous: Carrier | None, carrier: Carrier | None) -> bool:
    """The socket's messages go out on ``carrier`` from now: cut ``previous`` (the connection they
    went out on before) if it is another one and still holds more than ``SLACK_BYTES``; True if cut.
    Called once per stream or poll, never per message."""
    if previous is None or previous is carrier or previous.unsent_bytes() <= SLACK_BYTES:
        return False
    previous.cut()
    return True


class PollReceiver:
    """A ``/poll`` waiting for messages: either call answers it (its future resolves, the poll
    returns what the buffer holds then, or nothing once ``superseded``)."""

    __slots__ = ("future", "superseded")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.superseded = False

    def wake(self) -> None:
        fut = self.future
        if not fut.done():
            fut.set_result(None)

    def replaced(self) -> None:
        """A superseded poll answers at once, empty: the messages go to the newer receiver, whose
        connection is the only one allowed to hold them."""
        self.superseded = True
        self.wake()
