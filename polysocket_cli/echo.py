"""A WebSocket echo target for demos and tests, with a few scripted behaviours.

Text commands: ``close:CODE:REASON`` closes with that code, ``flood:N`` sends N text messages
``"0"`` .. ``"N-1"``, ``abort`` drops the TCP connection without a closing handshake. Everything
else (text or binary) is echoed. The first offered subprotocol is accepted.

It is websockets' own protocol (``websockets.server.ServerProtocol``: handshake, framing, UTF-8
and size checks, pings answered, closing handshake; no compression) driven by a plain asyncio
protocol on uvloop, as the relay drives its upstream: no task, queue or lock per connection or
message. The bench charges this target's CPU per echoed message to the relay's figure, and
websockets' asyncio server cost about 40 % more per message (bench/results/cpu-path.md). It sends
no keepalive pings of its own (the relay pings its upstreams); a flood is written as fast as the
transport takes it, and messages that arrive meanwhile are echoed after it, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import cast

from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

MAX_SIZE = 16 * 1024 * 1024
CLOSE_TIMEOUT_S = 10.0  # as websockets' servers: then the connection is dropped
MAX_BACKLOG = 16  # messages held while a flood is being written, before reading pauses
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_log = logging.getLogger("websockets.server")


def _select_subprotocol(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    return offered[0] if offered else None


class EchoProtocol(asyncio.Protocol):  # perf: echo-sans-io
    """One connection."""

    def __init__(self) -> None:
        self.proto = ServerProtocol(max_size=MAX_SIZE, select_subprotocol=_select_subprotocol, logger=_log)
        self.transport: asyncio.Transport | None = None
        self.parts: list[bytes] | None = None  # fragments of a message still arriving
        self.text = False
        self.done = False  # closed or aborted by a command: nothing more is echoed
        self.flood: tuple[int, int] | None = None  # (next, end) of a flood being written
        self.backlog: list[tuple[bytes, bool]] = []  # messages that came during a flood
        self.write_paused = False
        self.read_paused = False
        self.close_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                proto.send_response(proto.accept(event))
        self._flush()
        self._reading()

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.receive_eof()
        self.transport = None
        self.flood = None
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.flood is not None:
            self._pump()
            self._flush()
        self._reading()

    def _reading(self) -> None:
        """Read only while the client reads its echoes (as websockets' server, whose handler
        waits in ``send`` while its queue of received messages fills): a client that sends and
        never reads would otherwise grow the write buffer by every message it sends. Also
        paused while a flood holds ``MAX_BACKLOG`` messages to echo after it."""
        paused = self.write_paused or len(self.backlog) >= MAX_BACKLOG
        if paused is not self.read_paused and self.transport is not None:
            self.read_paused = paused
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is _TEXT or op is _BINARY:
            if frame.fin:
                self._message(bytes(frame.data), op is _TEXT)
            else:
                self.parts, self.text = [bytes(frame.data)], op is _TEXT
        elif op is _CONT and self.parts is not None:
            self.parts.append(bytes(frame.data))
            if frame.fin:
                parts, self.parts = self.parts, None
                self._message(b"".join(parts), self.text)

    def _message(self, data: bytes, text: bool) -> None:
        if self.done or self.proto.state is not State.OPEN:
            return
        if text:
            try:
                data.decode()
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return
        if self.flood is not None:  # echoes follow the flood, in order
            self.backlog.append((data, text))
            return
        if text and data[:6] in (b"close:", b"flood:", b"abort"):
            self._command(data.decode())
        elif text:
            self.proto.send_text(data)
        else:
            self.proto.send_binary(data)

    def _command(self, msg: str) -> None:
        try:
            if msg.startswith("close:"):
                _, code, reason = [*msg.split(":", 2), ""][:3]
                self.done = True
                self.proto.send_close(int(code), reason)
                self._arm_close_timer()
            elif msg.startswith("flood:"):
                self.flood = (0, int(msg[6:]))
                self._pump()
            elif msg == "abort":
                self.done = True
                if self.transport is not None:
                    self.transport.abort()
            else:
                self.proto.send_text(msg.encode())
        except Exception as exc:  # a malformed command fails the connection, as a failing handler would
            self._fail(CloseCode.INTERNAL_ERROR, str(exc)[:100])

    def _pump(self) -> None:
        """Write the flood until the transport pushes back (``resume_writing`` goes on); then the
        messages that came meanwhile."""
        assert self.flood is not None
        i, end = self.flood
        proto = self.proto
        while i < end:
            if self.write_paused or self.transport is None or proto.state is not State.OPEN:
                self.flood = (i, end) if self.transport is not None and proto.state is State.OPEN else None
                return
            proto.send_text(str(i).encode())
            i += 1
            if i % 64 == 0:
                self._flush()
        self.flood = None
        backlog, self.backlog = self.backlog, []
        for data, text in backlog:
            self._message(data, text)

    def _fail(self, code: int, reason: str) -> None:
        self.done = True
        self.proto.fail(code, reason)
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self.close_timer is None and self.transport is not None:
            self.close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._abort)

    def _abort(self) -> None:
        self.close_timer = None
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        transport = self.transport
        proto = self.proto
        for data in proto.data_to_send():
            if transport is None:
                continue
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the protocol's end of stream (the server closes first)
                transport.write_eof()
            else:
                transport.close()
        if proto.close_expected():
            self._arm_close_timer()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:  # perf: echo-uvloop
    """uvloop where it is built (as the relay and the router): asyncio's own loop costs the
    target about a fifth more CPU per message."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def run_echo(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    server = await asyncio.get_running_loop().create_server(EchoProtocol, host, port)
    async with server:
        if ready is not None:
            ready.set()
        await server.serve_forever()
