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

Misbehaving clients are bounded by ``EchoLimits`` (issue 21, D4: 500 half-finished handshakes
stayed open for good, 250 of them locked every real client out under a 200-descriptor limit, and
20 silent clients holding unfinished fragmented messages kept it at 381 MiB): an opening handshake
must finish within ``handshake_s`` (as the previous echo, on websockets' server); the bytes of
messages being assembled (fragments, and frames not yet whole) are bounded across all connections;
and over ``max_connections``, well under the descriptor limit, the oldest unfinished handshake is
dropped (else the newcomer), so a flood of half-open connections cannot lock real clients out.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class EchoLimits:
    handshake_s: float = 10.0  # as websockets' servers' open_timeout
    max_assembling_bytes: int = 4 * MAX_SIZE  # messages being assembled, all connections together
    max_connections: int = 0  # 0: derived from the descriptor limit (``connection_limit``)


def connection_limit(fd_limit: int | None = None) -> int:
    """Connections the echo serves at once: three quarters of the descriptor limit, so the rest
    stays free for accepting (and dropping) and for the process's own files."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_limit == resource.RLIM_INFINITY:
            fd_limit = 1 << 20
    return max(1, fd_limit * 3 // 4)


@dataclass(slots=True)
class EchoServer:
    """What the connections of one echo server share: who is open (oldest first), whose opening
    handshake is unfinished (oldest first), and the bytes being assembled."""

    limits: EchoLimits = field(default_factory=EchoLimits)
    open: dict[EchoProtocol, None] = field(default_factory=dict)
    unfinished: dict[EchoProtocol, None] = field(default_factory=dict)
    assembling: int = 0
    max_connections: int = 0

    def __post_init__(self) -> None:
        self.max_connections = self.limits.max_connections or connection_limit()

    def protocol(self) -> EchoProtocol:
        return EchoProtocol(self)

    def admit(self, conn: EchoProtocol) -> None:
        """A new connection; over the limit, the oldest unfinished handshake goes (the newcomer
        itself if every other connection is a real client)."""
        self.open[conn] = None
        self.unfinished[conn] = None
        if len(self.open) > self.max_connections:
            next(iter(self.unfinished)).drop()

    def leave(self, conn: EchoProtocol) -> None:
        self.open.pop(conn, None)
        self.unfinished.pop(conn, None)


def _select_subprotocol(protocol: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    return offered[0] if offered else None


class EchoProtocol(asyncio.Protocol):  # perf: echo-sans-io
    """One connection."""

    def __init__(self, server: EchoServer | None = None) -> None:
        self.server = server if server is not None else EchoServer()
        self.proto = ServerProtocol(max_size=MAX_SIZE, select_subprotocol=_select_subprotocol, logger=_log)
        self.held = 0  # bytes of a message being assembled, counted in server.assembling
        self.parts_size = 0
        self.handshake_timer: asyncio.TimerHandle | None = None
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
        self.handshake_timer = asyncio.get_running_loop().call_later(self.server.limits.handshake_s, self.drop)
        self.server.admit(self)

    def drop(self) -> None:
        """Abort: an opening handshake not finished in time, or one dropped for a newer connection."""
        if self.transport is not None:
            self.transport.abort()
        self.server.leave(self)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request) and not proto.eof_sent:
                # No answer once websockets itself ended the connection: bytes after the request
                # that are no frame (pipelined requests) fail it before the request is seen here.
                proto.send_response(proto.accept(event))
                self._handshake_done()
        self._flush()
        self._reading()
        self._count_assembling()

    def _handshake_done(self) -> None:
        self.server.unfinished.pop(self, None)
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None

    def _count_assembling(self) -> None:
        """Count what this connection holds of messages not yet whole (its fragments, and a frame
        still arriving in the parser's buffer); over the server's bound, it is failed with 1009."""
        held = self.parts_size + len(self.proto.reader.buffer) if self.transport is not None else 0
        server = self.server
        server.assembling += held - self.held
        self.held = held
        if held and server.assembling > server.limits.max_assembling_bytes and not self.done:
            self._drop_assembly()
            self._fail(CloseCode.MESSAGE_TOO_BIG, "too much data being assembled on this server")
            self._flush()

    def _drop_assembly(self) -> None:
        self.parts, self.parts_size = None, 0
        self.proto.reader.buffer.clear()
        self.server.assembling -= self.held
        self.held = 0

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.receive_eof()
        self.transport = None
        self.flood = None
        self._drop_assembly()
        self._handshake_done()
        self.server.leave(self)
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
                self.parts_size = len(frame.data)
        elif op is _CONT and self.parts is not None:
            self.parts.append(bytes(frame.data))
            self.parts_size += len(frame.data)
            if frame.fin:
                parts, self.parts, self.parts_size = self.parts, None, 0
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


async def run_echo(host: str, port: int, ready: asyncio.Event | None = None,
                   limits: EchoLimits | None = None) -> None:
    shared = EchoServer(limits if limits is not None else EchoLimits())
    server = await asyncio.get_running_loop().create_server(shared.protocol, host, port)
    async with server:
        if ready is not None:
            ready.set()
        await server.serve_forever()
