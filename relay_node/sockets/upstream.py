"""The relay's upstream WebSocket: an asyncio protocol driving ``websockets``' sans-I/O client.

Why not ``websockets.asyncio.client``: per connection it keeps a keepalive task, an assembler with
its futures and locks, the handshake's request and response, and the relay needed a reader task
awaiting ``recv()`` on top: several KiB per idle socket (bench/results/idle-memory.md). Here an
idle socket is one protocol object, the sans-I/O state and the transport:

* ``data_received`` feeds the parser and hands each complete message to the socket (the
  ``UpstreamSink``) by a plain call; the sink answers whether its buffer is full, and reading
  pauses until it calls ``resume_reading`` (issue 10, D1).
* Keepalive is driven from outside: the table's sweep calls ``keepalive`` on every socket, which
  sends a ping every ``--ping-interval`` and fails the connection when the pong has not come
  within ``--ping-timeout``.
* The closing handshake arms one timer (``--close-timeout``), after which the transport is
  aborted, as ``websockets`` does.

Nothing here knows about polysocket's sequencing: the sink decides what a message becomes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import struct
import urllib.parse
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus, SecurityError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Origin, Subprotocol
from websockets.uri import WebSocketURI, parse_uri

apply_mask: Callable[[bytes, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension
    try:
        from websockets.utils import apply_mask
    except ImportError:  # a release that moved it: websockets frames the messages (OWN_FRAMES)
        apply_mask = None

log = logging.getLogger("polysocket.relay")

MAX_REDIRECTS = 10  # as websockets' own client
REDIRECT_STATUSES = frozenset({300, 301, 302, 303, 307, 308})
_OPEN, _CLOSING = State.OPEN, State.CLOSING
_NEVER = float("inf")
_TEXT, _BINARY, _CONT, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG
_ws_log = logging.getLogger("websockets.client")
_tls: ssl.SSLContext | None = None


# websockets internals the relay leans on for speed (bench/PERF_LEDGER.md), looked up once here;
# tests/unit/test_websockets_contract.py asserts them for the installed release. A release without
# one gets the public path, slower but correct: ``data_to_send()`` after every read, websockets'
# own framing, the handshake's answer kept, the parser left to the cycle collector.


def _probe() -> tuple[bool, bool]:
    """(``writes`` is the list ``data_to_send`` drains, with ``extensions`` and ``debug`` beside
    it; ``parser`` is a generator that can be closed)."""
    proto = ClientProtocol(parse_uri("ws://localhost/"))
    writes = (isinstance(getattr(proto, "writes", None), list) and isinstance(getattr(proto, "extensions", None), list)
              and isinstance(getattr(proto, "debug", None), bool))
    parser = getattr(proto, "parser", None)
    closable = callable(getattr(parser, "close", None))
    if closable:
        parser.close()  # type: ignore[union-attr]
    return writes, closable


def _trimmable_response() -> bool:
    """A handshake answer's headers and body can be emptied in place."""
    try:
        response = Response(101, "Switching Protocols", Headers(Upgrade="websocket"), b"x")
        response.headers.clear()
        response.body = b""
    except Exception:  # e.g. a frozen dataclass
        return False
    return not response.headers and response.body == b""


def release_parser(proto: ClientProtocol) -> None:
    """Break the two cycles that hold an ended connection's protocol for the cycle collector.

    The parser generator's frame refers to the protocol: closing it breaks that one. A connection
    cut without a closing handshake (EOF or a reset: every target that just goes away) also ends
    ``parse()`` with an exception kept as ``parser_exc``, whose traceback holds ``parse()``'s own
    frame, which refers to the protocol: closing the current parser (by then ``discard()``) does not
    touch it. Its traceback goes; the exception itself (what ``ConnectionClosed`` chains) stays.
    """
    proto.parser.close()
    exc: BaseException | None = getattr(proto, "parser_exc", None)
    for _ in range(8):  # its causes and contexts, if a release ever chains them
        if exc is None:
            break
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


def take_handshake_exc(proto: ClientProtocol) -> BaseException | None:
    """The failed handshake's exception, taken off the protocol with its cycles broken.

    ``parse()`` keeps it as ``handshake_exc`` with a traceback through its own frame (which refers
    to the protocol), and an ``InvalidStatus`` and its response refer to each other
    (``response._exception``); raised from ``Upstream.handshake``, whose frame holds the Upstream,
    it would keep every refused open (Upstream, protocol, buffers) for the cycle collector. Taken
    off the protocol and with those links cut, the exception and all it saw go by refcount once the
    caller has reported it. (The message, the status and the response stay.)
    """
    exc: BaseException | None = proto.handshake_exc
    proto.handshake_exc = None
    link = exc
    hops = 0
    while link is not None and hops < 8:  # its causes and contexts (InvalidMessage chains the parse error)
        link.__traceback__ = None
        response = getattr(link, "response", None)
        if response is not None and getattr(response, "_exception", None) is link:
            response._exception = None
        link = link.__cause__ or link.__context__
        hops += 1
    return exc


QUEUED_WRITES, CLOSABLE_PARSER = _probe()
OWN_FRAMES = QUEUED_WRITES and apply_mask is not None


def _message_limit_is_one_int() -> bool:
    """An ``int`` ``max_size`` is the protocol's ``max_message_size``, with no fragment limit."""
    proto = ClientProtocol(parse_uri("ws://localhost/"), max_size=1000)
    limits = (getattr(proto, "max_message_size", None), getattr(proto, "max_fragment_size", 0))
    return limits == (1000, None)


# The relay reads the common frame itself only where it can tell that websockets would see no
# extension, log nothing (the attributes QUEUED_WRITES probes) and apply one size limit.
DIRECT_FRAMES = QUEUED_WRITES and _message_limit_is_one_int()
TRIMMABLE_RESPONSE = _trimmable_response()


def tls_context() -> ssl.SSLContext:  # perf: tls-context-shared
    """One verifying client context for every wss upstream: a context per connection costs
    memory and a certificate store load each."""
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


_masks = b""
_mask_at = 0


def _mask_key() -> bytes:  # perf: mask-key-pool (one os.urandom per 1,024 frames)
    """A fresh masking key (RFC 6455 5.3: from a strong source of entropy), taken from a pool of
    ``os.urandom`` bytes so that one system call serves a thousand frames; no key is used twice."""
    global _masks, _mask_at
    at = _mask_at
    if at >= len(_masks):
        _masks, at = os.urandom(4096), 0
    _mask_at = at + 4
    return _masks[at:at + 4]


def _new_mask_pool() -> None:
    """A forked child starts with a pool of its own: the parent's rest would give both processes
    the same keys."""
    global _masks, _mask_at
    _masks, _mask_at = b"", 0


os.register_at_fork(after_in_child=_new_mask_pool)


def client_frame(data: bytes, text: bool) -> bytes:
    """One final, masked text or binary frame (RFC 6455 5.2), as a client sends it."""
    head = 0x81 if text else 0x82
    size = len(data)
    key = _mask_key()
    assert apply_mask is not None, "OWN_FRAMES is off without apply_mask"
    if size < 126:
        header = struct.pack("!BB", head, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", head, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", head, 0x80 | 127, size)
    return header + key + apply_mask(data, key)


class UpstreamSink(TypingProtocol):
    def upstream_message(self, data: str | bytes) -> bool:
        """A complete message from the target; True: the buffer is full, pause reading."""

    def upstream_lost(self) -> None:
        """The connection ended (``Upstream.proto`` tells how)."""


class Upstream(asyncio.Protocol):  # perf: lean-upstream (no task per socket)
    __slots__ = ("_close_timer", "_early", "_head", "_lost", "_need", "_next_ping", "_opened", "_parts", "_ping_sent",
                 "_read_paused", "_text", "_waiter", "_write_paused", "close_timeout", "proto", "sink", "transport")

    def __init__(self, proto: ClientProtocol, close_timeout: float) -> None:
        self.proto = proto
        self.close_timeout = close_timeout
        self.transport: asyncio.Transport | None = None
        self.sink: UpstreamSink | None = None
        self._opened: asyncio.Future[None] | None = None  # only during the opening handshake
        self._early: list[str | bytes] | None = None  # messages that came before attach()
        self._parts: list[bytes | bytearray] | None = None  # fragments of a message still arriving
        self._text = False
        self._lost = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._read_paused = False  # by the sink: its buffer is full
        self._waiter: asyncio.Future[None] | None = None  # a drain() waiting for resume_writing
        self._ping_sent = 0.0  # monotonic time of the ping waiting for its pong, 0: none
        self._next_ping = 0.0
        # Where websockets' parser is in the byte stream (see _follow): bytes still owed to the frame
        # it is inside (0: between frames), -1: not known (the handshake's answer was split), and
        # the start of a frame header split across reads. A protocol made open has read nothing.
        self._need = 0 if proto.state is _OPEN else -1
        self._head = b""

    # opening

    async def handshake(self, user_agent: str) -> None:
        """Send the upgrade request and wait for the answer; raise what ``websockets`` would."""
        proto = self.proto
        request = proto.connect()
        request.headers["User-Agent"] = user_agent
        proto.send_request(request)
        del request
        opened = self._opened = asyncio.get_running_loop().create_future()
        self._flush()
        if self._lost:
            opened.set_result(None)  # lost before the request went out: handshake_exc says so
        try:
            await opened
        finally:
            self._opened = None
        exc = take_handshake_exc(proto)  # perf: handshake-exc-cycle (a refused open freed by refcount)
        if exc is not None:
            try:
                raise exc
            finally:
                exc = None  # this frame is in its traceback: no local may hold it

    def attach(self, sink: UpstreamSink, now: float, ping_interval: float | None) -> None:
        """Hand messages to ``sink`` from now on (first those that came before)."""
        self.sink = sink
        self._next_ping = now + ping_interval if ping_interval is not None else float("inf")
        early, self._early = self._early, None
        paused = False
        for msg in early or ():
            paused = sink.upstream_message(msg) or paused
        if paused:
            self.pause_reading()
        if self._lost:
            self.sink = None
            sink.upstream_lost()

    @property
    def subprotocol(self) -> Subprotocol | None:
        return self.proto.subprotocol

    @property
    def lost(self) -> bool:
        """The connection has ended."""
        return self._lost

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        if proto.state is _OPEN:
            if not self._need and not self._head and self._parts is None and DIRECT_FRAMES \
                    and not proto.extensions and not proto.debug and self._direct(data):
                return
            if self._need >= 0:
                self._follow(data)
        elif self._need < 0 and proto.state is State.CONNECTING and data.startswith(b"HTTP/"):
            end = data.find(b"\r\n\r\n")  # a 101 has no body: frames start after the header block
            if end >= 0:
                self._need = 0
                self._follow(data[end + 4:])
        proto.receive_data(data)
        events = proto.events_received()
        if not QUEUED_WRITES or proto.writes:  # perf: no-empty-flush (pongs and close echoes owe; most reads not)
            self._flush()
        if self._close_timer is None and proto.close_expected():
            self._arm_close_timer()
        for event in events:
            if isinstance(event, Frame):
                if self._frame(event):
                    break  # the connection failed: nothing after it is delivered
            elif TRIMMABLE_RESPONSE and isinstance(event, Response) and proto.handshake_exc is None:
                # The parser's generator keeps the handshake's answer for the connection's life:
                # its headers (~2 KiB per idle socket) are not needed once it was accepted.
                event.headers.clear()  # perf: drop-handshake-answer (~2 KiB per idle socket)
                event.body = b""
        opened = self._opened
        if opened is not None and not opened.done() and (proto.state is not State.CONNECTING
                                                          or proto.handshake_exc is not None):
            opened.set_result(None)  # the handshake's answer came (or cannot come)

    def _direct(self, data: bytes) -> bool:  # perf: direct-frames (the parser's generators skipped)
        """Deliver ``data``'s messages when it is whole final unmasked text / binary frames under
        64 KiB and within ``max_size``, without extensions, starting where the parser stands
        between frames (so it is left exactly as if it had read them); False: the parser reads it
        (control frames, fragments, large messages, a frame split across reads, anything odd)."""
        end = len(data)
        limit = self.proto.max_message_size
        at = 0
        spans: list[tuple[int, int, bool]] = []
        while at < end:
            if end - at < 2:
                return False
            first, size = data[at], data[at + 1]
            if (first != 0x81 and first != 0x82) or size > 126:  # FIN, no RSV, text / binary, unmasked
                return False
            at += 2
            if size == 126:
                if end - at < 2:
                    return False
                size = (data[at] << 8) | data[at + 1]
                at += 2
            if at + size > end or (limit is not None and size > limit):
                return False
            spans.append((at, at + size, first == 0x81))
            at += size
        for start, stop, text in spans:
            if self._deliver(data[start:stop], text):
                break  # the connection failed: nothing after it is delivered
        return True

    def _follow(self, data: bytes) -> None:
        """Follow the frame boundaries through bytes handed to the parser, so that ``_direct``
        knows when it stands between frames again (its buffer empty, no header half read)."""
        head = self._head
        if head:
            data = head + data
            self._head = b""
        at, end = self._need, len(data)
        while at < end:
            if end - at < 2:
                break
            size, at_payload = data[at + 1] & 0x7F, at + 2
            if size == 126:
                at_payload += 2
            elif size == 127:
                at_payload += 8
            if data[at + 1] & 0x80:
                at_payload += 4  # a masked frame (the parser refuses it; the connection fails)
            if at_payload > end:
                break
            if size == 126:
                size = int.from_bytes(data[at + 2:at + 4])
            elif size == 127:
                size = int.from_bytes(data[at + 2:at + 10])
            at = at_payload + size
        else:
            self._need = at - end
            return
        self._head, self._need = data[at:], 0

    def eof_received(self) -> None:
        self.proto.receive_eof()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        proto = self.proto
        proto.receive_eof()  # idempotent: the protocol is CLOSED after it
        self._lost = True
        self._parts = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)  # handshake() raises the protocol's handshake_exc
        self._wake_writer()
        # The parser generator refers to the protocol: closing it breaks that cycle, so the
        # connection's buffers go with the last reference rather than with the cycle collector.
        if CLOSABLE_PARSER:
            release_parser(proto)  # perf: parser-close (freed by refcount, not by the cycle collector)
        sink, self.sink = self.sink, None  # and the socket <-> upstream cycle
        if sink is not None:
            sink.upstream_lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    # messages

    def _frame(self, frame: Frame) -> bool:
        """Handle one frame; True when it failed the connection."""
        op = frame.opcode
        # bytes or a bytearray (websockets' reader hands out either), never a memoryview: the parser
        # makes no views. A checked cast: compiled by mypyc, a wrong type fails here, not further on.
        data = cast("bytes | bytearray", frame.data)
        if op is _TEXT or op is _BINARY:
            if not frame.fin:
                self._parts, self._text = [data], op is _TEXT
                return False
            return self._deliver(data, op is _TEXT)
        elif op is _CONT:
            parts = self._parts
            if parts is None:
                return False  # the protocol refuses an unexpected continuation itself
            parts.append(data)
            if frame.fin:
                self._parts = None
                return self._deliver(b"".join(parts), self._text)
        elif op is _PONG:
            self._ping_sent = 0.0
        return False

    def _deliver(self, data: bytes | bytearray, text: bool) -> bool:
        msg: str | bytes
        if text:
            try:
                msg = data.decode()
            except UnicodeDecodeError as exc:
                self.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
                return True
        else:
            msg = data if type(data) is bytes else bytes(data)  # a message is immutable from here on
        sink = self.sink
        if sink is None:
            if not self._lost:
                if self._early is None:
                    self._early = []
                self._early.append(msg)
        elif sink.upstream_message(msg):
            self.pause_reading()
        return False

    def pause_reading(self) -> None:
        self._read_paused = True
        if self.transport is not None and not self._lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self._read_paused = False
        if self.transport is not None and not self._lost:
            self.transport.resume_reading()

    # writing

    def send(self, data: bytes, text: bool) -> bool:
        """Write one message; False when the connection is no longer open (nothing was sent)."""
        proto = self.proto
        if proto.state is not _OPEN or self._lost:
            return False
        transport = self.transport
        if OWN_FRAMES and transport is not None and not proto.writes and not proto.extensions and not proto.debug:
            # What ``send_text``/``send_binary`` would queue (one unfragmented frame, masked: the
            # relay is the client), written at once: websockets builds it through a Frame, a
            # BytesIO and a getrandom call per frame: ~7 % of the relay's Python per round trip.
            transport.write(client_frame(data, text))  # perf: own-client-frame (no Frame, BytesIO, getrandom)
            return True
        if text:
            proto.send_text(data)
        else:
            proto.send_binary(data)
        self._flush()
        return True

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._write_paused and not self._lost:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    @property
    def write_paused(self) -> bool:
        """The transport's write buffer is over its high-water mark (``drain`` would wait)."""
        return self._write_paused and not self._lost

    def write_buffer_size(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def _wake_writer(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _flush(self) -> None:
        transport = self.transport
        for data in self.proto.data_to_send():
            if transport is None or self._lost:
                continue
            if data:
                transport.write(data)
            elif transport.can_write_eof():  # the protocol's end of stream: half-close
                try:
                    transport.write_eof()
                except Exception:  # the connection is ending anyway
                    transport.abort()
            else:
                transport.close()

    # closing

    def close(self, code: int | None, reason: str = "") -> None:
        """Start the closing handshake (None: a close frame without a status code); the transport
        is aborted if the target has not ended the connection within the close timeout."""
        proto = self.proto
        if proto.state is not _OPEN or self._lost:
            return
        proto.send_close(code, reason)
        self._flush()
        self._arm_close_timer()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (a close frame if still open, no more reading of its data)."""
        proto = self.proto
        if self._lost:
            return
        proto.fail(code, reason)
        self._flush()
        self._arm_close_timer()

    def abort(self) -> None:
        """Drop the connection without a handshake."""
        if self.transport is not None and not self._lost:
            self.transport.abort()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._lost:
            self._close_timer = asyncio.get_running_loop().call_later(self.close_timeout, self.abort)

    # keepalive, driven by the table's sweep

    def keepalive_due(self, now: float, interval: float | None, timeout: float | None) -> float:
        """When ``keepalive`` next has something to do (the sweep's schedule, ``relay_node.sockets.deadlines``):
        the ping, or the pong's deadline while one is out (whichever comes first: a pong that
        arrives meanwhile leaves the ping due). While reading is paused, every interval, as the
        keepalive then only moves its next ping on."""
        if self._lost or self.proto.state is not _OPEN or (interval is None and timeout is None):
            return _NEVER
        if self._read_paused:
            return now + (interval or 0.0) if interval is not None else _NEVER
        if self._ping_sent and timeout is not None:
            return min(self._ping_sent + timeout, self._next_ping)
        return self._next_ping

    def keepalive(self, now: float, interval: float | None, timeout: float | None) -> bool:
        """Ping when due; True when the last ping went unanswered for ``timeout`` (the
        connection is then failed as websockets' keepalive does: 1011, the client sees 1006).

        Not while reading is paused for the sink: the pong could not be read, and a target that
        just filled the buffer is not dead (the idle timeout ends a socket nobody polls)."""
        if self._lost or self.proto.state is not _OPEN:
            return False
        if self._read_paused:
            self._ping_sent = 0.0
            self._next_ping = now + (interval or 0.0)
            return False
        if self._ping_sent and timeout is not None:  # without a timeout, pings go on regardless (as websockets)
            if now - self._ping_sent >= timeout:
                self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return True
            return False
        if interval is not None and now >= self._next_ping:
            self.proto.send_ping(b"")
            self._flush()
            self._ping_sent = now
            self._next_ping = now + interval
        return False


async def open_upstream(target: str, *, host: str | None, subprotocols: list[str], origin: str | None,
                        user_agent: str, max_size: int, open_timeout: float, close_timeout: float) -> Upstream:
    """Connect (TCP, TLS for wss, the WebSocket handshake) within ``open_timeout``.

    ``host`` pins the TCP connection to that address while the Host header and the TLS server
    name stay the URL's. Redirects are followed as websockets does; with a pinned address only
    to the same origin (ValueError otherwise), never from wss to ws.
    """
    loop = asyncio.get_running_loop()
    uri = target
    ws_uri = parse_uri(uri)
    async with asyncio.timeout(open_timeout):
        for _ in range(MAX_REDIRECTS):
            proto = ClientProtocol(
                ws_uri,
                origin=Origin(origin) if origin else None,
                subprotocols=[Subprotocol(p) for p in subprotocols] or None,
                max_size=max_size,
                logger=_ws_log,
            )
            factory = functools.partial(Upstream, proto, close_timeout)
            address = host if host is not None else ws_uri.host
            up: Upstream
            if ws_uri.secure:
                _, up = await loop.create_connection(factory, address, ws_uri.port, ssl=tls_context(),
                                                     server_hostname=ws_uri.host)
            else:
                _, up = await loop.create_connection(factory, address, ws_uri.port)
            try:
                await up.handshake(user_agent)
            except InvalidStatus as exc:
                up.abort()
                location = exc.response.headers.get("Location")
                if exc.response.status_code not in REDIRECT_STATUSES or location is None:
                    raise
                uri = urllib.parse.urljoin(uri, location)
                ws_uri = _redirect(proto.uri, parse_uri(uri), pinned=host is not None)
                continue
            except BaseException:
                up.abort()
                raise
            return up
    raise SecurityError(f"more than {MAX_REDIRECTS} redirects")


def _redirect(old: WebSocketURI, new: WebSocketURI, pinned: bool) -> WebSocketURI:
    if old.secure and not new.secure:
        raise SecurityError("cannot follow a redirect from wss to ws")
    if pinned and (old.secure, old.host, old.port) != (new.secure, new.host, new.port):
        raise ValueError("cannot follow a cross-origin redirect with a pinned address")
    return new
