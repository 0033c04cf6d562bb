"""The relay's lean HTTP/1.1 server protocol, on httptools, serving one ``answer`` function.

Why not a generic ASGI server protocol: on the data path it costs 30-60 % more CPU per message
(scope and event dicts, per-header checks, two writes per answer; bench/results/relay-ab.md).
This one hands ``answer(path, query, request)`` the decoded path and the raw query, and writes
status line, headers and body in one ``transport.write``.

An answer's body is bytes, or a ``StreamBody`` (``GET /stream``): then the status line and headers
go out with ``transfer-encoding: chunked`` and the body's first piece at once, and the body's owner
writes chunks (``write_chunk``) as it has them and ends it (``end_stream``); the connection then
serves the requests pipelined behind it. A stream costs no task and no timer here: the answer task
ends when the stream starts, the keep-alive timer is not armed while it is open, and the owner is
told when the client leaves (``StreamBody.lost``) or the server shuts down (``StreamBody.stop``).
The bytes a stream can have queued in the transport are bounded by its owner (the relay's stream
ends after its byte budget: at most ``--stream-bytes`` plus one message, and heartbeats), not by
``pause_writing``. The keep-alive timeout runs from the end of every answer, a stream's included,
also while the client is not reading; a close that cannot write what the transport holds because
the client reads nothing for a keep-alive interval becomes an abort, so such a client holds neither
the connection nor those bytes for longer. Across connections the answer's owner bounds them: each
request carries its connection (``ProtocolRequest.carrier``), which tells what it still holds
unsent (``unsent_bytes``) and can be dropped at once (``cut``); the relay cuts a connection whose
answer a newer request of the same socket superseded (``relay_node.sockets.receivers``).

It depends on nothing but asyncio and httptools: its arguments are the answer function, the
``Limits`` and a ``Connections`` registry (what a server needs for a graceful shutdown), so it
runs under ``loop.create_server`` (``relay_node.server``) and in tests over a transport double.

A request the protocol refuses while parsing it (malformed, URL or headers over the
limit, runaway pipelining) is answered with a typed JSON error and ``connection: close`` (after
the answer in progress, if any: answers are read in order), and nothing from that connection is
executed after it, the refused request included.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

import httptools

from polysocket_core import edge
from polysocket_core.edge import header_block, status_line
from polysocket_core.errors import ErrorCode, PolysocketError

from .logsafe import log_internal

log = logging.getLogger("polysocket.relay")

Headers = list[tuple[bytes, bytes]]


class StreamSink(Protocol):
    """Where a stream's owner writes (the connection)."""

    def write_chunk(self, data: bytes) -> None: ...

    def end_stream(self) -> None: ...

    def unsent_bytes(self) -> int: ...

    def cut(self) -> None: ...


class StreamBody(Protocol):
    """An answer body written over time, driven by callbacks of its owner (no task)."""

    def start(self, sink: StreamSink) -> tuple[bytes, bool]:
        """The headers are being written: the first piece of the body, and False if the stream
        ends right after it (then the owner must not call the sink)."""
        ...

    def stop(self) -> None:
        """End soon (server shutdown, the client half-closed): the owner calls ``end_stream``."""
        ...

    def lost(self) -> None:
        """The connection is gone: forget the sink, write nothing more."""
        ...


Answer = tuple[int, Headers, bytes | StreamBody]


AnswerFn = Callable[[str, bytes, "ProtocolRequest"], Awaitable[Answer]]  # e.g. RelayEndpoints.answer


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request and one connection may hold; past a limit the request is refused."""

    max_url_bytes: int = 128 * 1024  # JSONP clients keep URLs near 2,000 characters; curl users may send more
    max_header_bytes: int = 64 * 1024  # names + values of all headers
    max_body_bytes: int = 1024 * 1024
    max_pipelined: int = 16  # complete requests waiting behind the one being answered before reading pauses
    max_queued: int = 256  # ... and past which (the rest of one read is still parsed) the connection is cut
    keep_alive_s: float = 65.0  # a request must be complete this long after the connection or last answer


class Connections:
    """The open connections and the answers in flight: what a server shuts down gracefully."""

    __slots__ = ("open", "tasks")

    def __init__(self) -> None:
        self.open: set[RelayHTTPProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def shutdown(self) -> None:
        """Close idle connections now, busy ones after the answer in progress."""
        for conn in list(self.open):
            conn.shutdown()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every connection closed or ``timeout`` passed; True when all closed."""
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self.open

    def abort(self) -> None:
        """Cancel the answers still running (long polls) and drop their connections."""
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.open):
            if conn.transport is not None:
                conn.transport.abort()


# --- response bytes -----------------------------------------------------------------------------

_date_second = -1
_date_line = b""


def date_line() -> bytes:  # perf: date-line-cache
    """The ``date`` header (RFC 9110 wants one from a server with a clock), rebuilt once a second."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_block_cache: dict[int, tuple[Headers, bytes]] = {}


def cached_block(headers: Headers) -> bytes:  # perf: header-block-cache
    """Endpoints answer with a few constant header lists: format each once (keyed by identity)."""
    hit = _block_cache.get(id(headers))
    if hit is not None and hit[0] is headers:
        return hit[1]
    return header_block(headers)


def register_constant_headers(*lists: Headers) -> None:
    """Header lists that live as long as the process and are never mutated."""
    for h in lists:
        _block_cache[id(h)] = (h, header_block(h))


def error_answer(code: ErrorCode, message: str) -> tuple[int, Headers, bytes]:
    """A typed error in the protocol doc's shape, readable by CORS clients."""
    return edge.render_error(None, PolysocketError(code, message))


# --- request-target -----------------------------------------------------------------------------

class BadTarget(ValueError):
    """The request-target is neither origin-form (``/p?q``) nor absolute-form (``http://h/p?q``)."""


def split_target(target: bytes) -> tuple[str, bytes]:
    """Decoded path and raw query of a request-target, without a URL-length limit of its own.

    httptools' ``parse_url`` fails past 65,535 bytes (its offsets are 16-bit), below the 128 KiB the
    relay accepts, and raised with the whole URL in its message; this is all the relay needs.
    """
    path, _, query = target.partition(b"?")
    query = query.partition(b"#")[0]
    path = path.partition(b"#")[0]
    if not path.startswith(b"/"):
        if path == b"*":
            return "*", b""
        scheme, sep, rest = path.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise BadTarget("request-target must start with / or http(s)://")
        authority, slash, tail = rest.partition(b"/")
        if not authority or (b"[" in authority and b"]" not in authority):
            raise BadTarget("malformed authority in request-target")
        path = slash + tail if slash else b"/"
    try:
        text = path.decode("ascii")
        if "%" in text:
            text = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise BadTarget("request path is not valid percent-encoded UTF-8") from None
    return text, query


# --- the protocol -------------------------------------------------------------------------------

class _Resume:
    """Awaiting it goes on with a coroutine that already ran up to its first suspension
    (``waiting``, what it yielded): values and exceptions (a cancellation) pass through."""

    __slots__ = ("coro", "waiting")
    __deletable__ = ("coro", "waiting")  # mypyc: the attributes are let go of once awaited

    def __init__(self, coro: Coroutine[object, object, None], waiting: object) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[object, object, None]:
        coro, waiting = self.coro, self.waiting
        del self.coro, self.waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration:
                    return


async def _finish(coro: Coroutine[object, object, None], waiting: object) -> None:
    await _Resume(coro, waiting)


class ProtocolRequest:
    """One parsed request; its body is read in full before ``answer`` runs."""

    __slots__ = ("body_chunks", "body_size", "carrier", "expect_continue", "header_bytes", "headers", "http10",
                 "keep_alive", "method", "too_large", "url")

    def __init__(self, carrier: RelayHTTPProtocol | None = None) -> None:
        self.carrier = carrier  # the connection the answer goes out on
        self.url = b""
        self.header_bytes = 0
        self.method = ""
        self.headers: Headers = []
        self.body_chunks: list[bytes] = []
        self.body_size = 0
        self.too_large = False
        self.expect_continue = False
        self.keep_alive = True
        self.http10 = False  # no chunked transfer coding: a stream's end is the connection's

    async def body(self) -> bytes:
        return b"".join(self.body_chunks)


# What ``req`` holds between requests: a complete request belongs to its answer (or the queue) and
# goes with it, so an open stream or an idle keep-alive connection keeps no headers alive.
_NO_REQUEST = ProtocolRequest()  # perf: no-request-between


class _Refused(Exception):
    """Raised from a parser callback after a refusal: stops httptools parsing the rest of the read."""


class RelayHTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Requests on a connection are answered in order, one at a time."""

    __slots__ = ("answer", "busy", "chunked", "closing", "connections", "eof", "idle_from", "idle_timer", "limits",
                 "loop", "parser", "queue", "refusal", "refused", "req", "stream", "transport", "unfinished",
                 "write_paused")

    def __init__(self, answer: AnswerFn, limits: Limits, connections: Connections,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.answer = answer
        self.limits = limits
        self.connections = connections
        self.loop = loop or asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.req = _NO_REQUEST
        self.queue: deque[ProtocolRequest] | None = None  # requests not yet answered (pipelining; rare)
        self.busy = False
        self.closing = False  # close once the current answer is written
        self.eof = False  # the client half-closed: answer what it sent, then close
        self.refused = False  # a refusal was written: parse and execute nothing more
        self.refusal: bytes | None = None  # a refusal waiting for the answer in progress
        self.write_paused = False  # the transport's write buffer is over its high-water mark
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_from = 0.0  # loop time the keep-alive timeout runs from (the opening, or the last answer)
        self.stream: StreamBody | None = None  # the streamed answer being written, if any
        self.chunked = True  # the stream in progress uses the chunked transfer coding (HTTP/1.1)
        self.unfinished = 0  # bytes of reads that only grew an unfinished header (_head_arriving)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.open.add(self)
        self.idle_from = self.loop.time()
        self.idle_timer = self.loop.call_later(self.limits.keep_alive_s, self._idle_close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.open.discard(self)
        self.transport = None
        self.queue = None
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.lost()
        self._cancel_idle()

    def data_received(self, data: bytes) -> None:
        # The idle timer is not reset by data: a request must be complete within the keep-alive
        # timeout of the connection opening or the previous answer (no trickling slowloris).
        if self.refused:
            return
        req = self.req  # a head still arriving (rare: a head mostly comes whole) is followed below
        mark = (req.header_bytes, len(req.url)) if req is not _NO_REQUEST and not req.method else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrade not supported")
        except httptools.HttpParserError:
            if not self.refused:  # else a callback refused and stopped the parser (_Refused)
                self._refuse(400, "malformed HTTP request")
        if mark is not None and not self.refused:
            self._head_arriving(req, mark, len(data))

    def _head_arriving(self, req: ProtocolRequest, mark: tuple[int, int], size: int) -> None:
        """httptools reports a header only once it is complete and holds an unfinished one, growing
        it read by read: without this, a header that never ends is held until the keep-alive
        timeout, however large. A read that completed nothing of the head (no header, no URL
        bytes) only grew the unfinished header: counted, it is refused as headers over the limit,
        at most one read late (the read the header began in is not counted)."""
        if self.req is req and not req.method and mark == (req.header_bytes, len(req.url)):
            self.unfinished += size
            if req.header_bytes + self.unfinished > self.limits.max_header_bytes:
                self._refuse(431, f"request headers over {self.limits.max_header_bytes} bytes")
        else:
            self.unfinished = 0

    def eof_received(self) -> bool | None:
        if self.busy:
            self.eof = True
            if self.stream is not None:
                self.stream.stop()  # a client that half-closes is done reading the stream
            return True  # keep the transport open to write the answers still owed
        return None

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading requests and answering queued ones."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and (self.queue is None or len(self.queue) < self.limits.max_pipelined):
            self.transport.resume_reading()
        self._next()

    # the connection as an answer's carrier (StreamSink; relay_node.sockets.receivers.Carrier)

    def unsent_bytes(self) -> int:
        """Bytes written that the client has not taken yet (what the transport buffers)."""
        transport = self.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def cut(self) -> None:
        """Drop the connection now, with what it still holds and the requests queued on it (a
        superseded answer its client left unread)."""
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful shutdown: close now if idle, else after the answer in progress (a stream ends now)."""
        if self.busy:
            self.closing = True
            if self.stream is not None:
                self.stream.stop()
        elif self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.req = ProtocolRequest(self)

    def on_url(self, url: bytes) -> None:
        self.req.url += url
        if len(self.req.url) > self.limits.max_url_bytes:
            self._refuse(414, f"URL over {self.limits.max_url_bytes} bytes")
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self.req.header_bytes += len(name) + len(value)
        if self.req.header_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request headers over {self.limits.max_header_bytes} bytes")
            raise _Refused
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.req.expect_continue = True
        self.req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():  # else httptools completes the message, then raises HttpParserUpgrade
            self._refuse(400, "upgrade not supported")
            raise _Refused
        req = self.req
        req.method = self.parser.get_method().decode("ascii")
        req.http10 = self.parser.get_http_version() == "1.0"
        max_body = self.limits.max_body_bytes
        for name, value in req.headers:
            if name == b"content-length" and value.isdigit() and int(value) > max_body:
                req.too_large = True
        self._continue_if_next()

    def _continue_if_next(self) -> None:
        """``100 Continue`` for the request being read, once it is the next to be answered: while
        another answer is in progress (an open stream's chunks, or requests queued before it), it
        would land inside that answer and break its framing. ``_next`` writes it when its turn
        comes; a client that does not wait sends the body anyway."""
        req = self.req
        transport = self.transport
        if (not req.expect_continue or req.too_large or self.busy or self.queue or transport is None
                or transport.is_closing()):
            return
        req.expect_continue = False  # written once
        transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req.too_large:
            return
        req.body_size += len(body)
        if req.body_size > self.limits.max_body_bytes:
            req.too_large = True
            req.body_chunks = []
        else:
            req.body_chunks.append(body)

    def on_message_complete(self) -> None:
        if self.refused:  # an answer given in this read closed the connection: execute nothing more
            raise _Refused
        req = self.req
        self.req = _NO_REQUEST
        req.keep_alive = self.parser.should_keep_alive()
        # The keep-alive timer stops when the request starts (_start): one queued behind an answer
        # the client is not reading leaves it running.
        if self.busy or self.write_paused:
            if self.queue is None:
                self.queue = deque()
            if len(self.queue) >= self.limits.max_queued:
                # Pausing does not stop the parser working through what was already read: a
                # client that pipelines without reading its answers is cut off here.
                self._refuse(429, "too many pipelined requests")
                raise _Refused
            self.queue.append(req)
            if len(self.queue) == self.limits.max_pipelined and self.transport is not None:
                self.transport.pause_reading()  # resumed as the queue drains
        else:
            self._run(req)

    # answering

    def _run(self, req: ProtocolRequest) -> None:
        """Answer now, in the parser's callback: most answers (a send, a poll with messages
        waiting, a stream starting) never wait, and then cost no task. One that waits goes on in
        a task from where it stopped."""
        self.busy = True  # the keep-alive timer, if it fires now, finds the connection busy and stops
        answer = self._answer(req)
        try:
            waiting = answer.send(None)  # perf: answer-in-callback (a task only if it waits)
        except StopIteration:
            return
        except Exception as exc:  # as a task's unretrieved exception would be: logged
            log_internal(log, "answer", exc)
            return
        self._track(self.loop.create_task(_finish(answer, waiting)))

    def _start(self, req: ProtocolRequest) -> None:
        """Answer a queued request in a task (not nested in the answer that just completed)."""
        self.busy = True  # the keep-alive timer, if it fires now, finds the connection busy and stops
        self._track(self.loop.create_task(self._answer(req)))

    def _track(self, task: asyncio.Task[None]) -> None:
        tasks = self.connections.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _answer(self, req: ProtocolRequest) -> None:
        # Refused before the endpoint runs: a body over the limit (even on a GET) or a target that
        # cannot be routed. The request was read whole, so the connection stays usable.
        answer: Answer
        if req.too_large:
            answer = error_answer(ErrorCode.PAYLOAD_TOO_LARGE, f"request body over {self.limits.max_body_bytes} bytes")
        else:
            try:
                path, query = split_target(req.url)
            except BadTarget as bad:
                answer = error_answer(ErrorCode.BAD_REQUEST, str(bad))
            else:
                try:
                    answer = await self.answer(path, query, req)
                except Exception as failed:  # the seam should not raise; if it does, the client still gets an answer
                    log_internal(log, "answer", failed)
                    answer = error_answer(ErrorCode.INTERNAL, "internal error")
                except asyncio.CancelledError as cancelled:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this answer's task is cancelled (shutdown): the connection goes too
                    # A future the endpoint awaited was cancelled (or, run in the parser's callback,
                    # no task of its own): an error like any other, not a connection left busy.
                    log_internal(log, "answer", cancelled)
                    answer = error_answer(ErrorCode.INTERNAL, "internal error")
        status, headers, body = answer
        try:
            if isinstance(body, bytes):
                self._write(req, status, headers, body)
            else:
                self._write_stream(req, status, headers, body)
        except Exception as failed:  # e.g. a stream body that fails to start: still a typed answer
            log_internal(log, "answer", failed)
            if self.stream is body:
                self.stream = None
                try:
                    body.lost()  # write nothing more here
                except Exception as lost_exc:
                    log_internal(log, "answer", lost_exc)
            if self.busy:  # nothing of this answer was written (busy ends with the write)
                self.closing = True  # what the failed answer left behind is unknown
                self._write(req, *error_answer(ErrorCode.INTERNAL, "internal error"))

    def _write(self, req: ProtocolRequest, status: int, headers: Headers, body: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.busy = False
            return
        close = self.closing or not req.keep_alive or (self.eof and not self.queue)
        data = b"%b%b%bcontent-length: %d\r\n%b\r\n%b" % (
            status_line(status), date_line(), cached_block(headers), len(body),
            b"connection: close\r\n" if close else b"", b"" if req.method == "HEAD" else body)
        self.busy = False
        transport.write(data)  # perf: one-write-answer (status, headers, body)
        self._after_answer(close)

    def _after_answer(self, close: bool) -> None:
        """An answer is complete: close the connection (after a refusal that waited for it), or go
        on with the next request."""
        refusal, self.refusal = self.refusal, None
        if refusal is not None and not close and self.transport is not None:
            self.transport.write(refusal)
            close = True
        if close:
            self.refused = True  # whatever follows on this connection is not read
            self.queue = None
            self._close()
            return
        self._next()

    def _close(self) -> None:
        """Close after writing what the transport holds. A client that reads none of it for a
        keep-alive interval will not: ``close`` alone would keep the connection and its bytes
        (up to a stream's budget) for as long as the client stays; it is aborted instead."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        left = transport.get_write_buffer_size()
        if left:
            self._cancel_idle()
            self.idle_timer = self.loop.call_later(self.limits.keep_alive_s, self._flush_check, left)

    def _flush_check(self, before: int) -> None:
        self.idle_timer = None
        transport = self.transport
        if transport is None:
            return
        left = transport.get_write_buffer_size()
        if left >= before:
            transport.abort()  # nothing read for a keep-alive interval
        elif left:
            self.idle_timer = self.loop.call_later(self.limits.keep_alive_s, self._flush_check, left)

    def _cancel_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    # streamed answers (StreamBody)

    def _write_stream(self, req: ProtocolRequest, status: int, headers: Headers, body: StreamBody) -> None:
        """Headers and the body's first piece now; the connection stays busy until ``end_stream``.
        HTTP/1.0 has no chunked coding: the body then ends with the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.busy = False
            return
        chunked = self.chunked = not req.http10
        if not chunked or not req.keep_alive:
            self.closing = True
        self.stream = body
        first, more = body.start(self)
        if chunked:
            framing = b"transfer-encoding: chunked\r\n"
            piece = b"%x\r\n%b\r\n" % (len(first), first) if first else b""
            if not more:
                piece += b"0\r\n\r\n"
        else:
            framing, piece = b"", first
        transport.write(b"%b%b%b%b%b\r\n%b" % (
            status_line(status), date_line(), cached_block(headers), framing,
            b"connection: close\r\n" if self.closing else b"", piece))
        if not more:
            self._stream_done()
        elif self.refusal is not None:
            body.stop()  # a refusal waits behind it

    def write_chunk(self, data: bytes) -> None:
        """A piece of the stream in progress (StreamSink)."""
        transport = self.transport
        if transport is None or not data or self.stream is None or transport.is_closing():
            return
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    def end_stream(self) -> None:
        """The stream in progress is complete (StreamSink): the terminal chunk, then the next request."""
        if self.stream is None:
            return
        transport = self.transport
        if transport is not None and self.chunked and not transport.is_closing():
            transport.write(b"0\r\n\r\n")
        self._stream_done()

    def _stream_done(self) -> None:
        self.stream = None
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        self._after_answer(self.closing or (self.eof and not self.queue))

    def _next(self) -> None:
        """Answer the next queued request, unless one is in progress or the client stopped reading."""
        transport = self.transport
        if self.busy or transport is None or transport.is_closing():
            return
        if self.queue and not self.write_paused:
            if len(self.queue) == self.limits.max_pipelined:
                transport.resume_reading()
            self._start(self.queue.popleft())
            return
        self._continue_if_next()  # the request being read is next now
        # Idle, or the client stopped reading its answers: the keep-alive timeout runs from this
        # answer either way, so a client that reads nothing more cannot hold the connection. The
        # timer armed earlier stays: it checks, when it fires, how long the connection has been idle.
        self.idle_from = self.loop.time()  # perf: lazy-keepalive-timer (no timer armed and cancelled per request)
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.limits.keep_alive_s, self._idle_close)

    def _idle_close(self) -> None:
        """Close a connection idle for the keep-alive timeout; one still busy is left alone (its
        answer re-arms the timer), one that answered since is checked again when its time is up."""
        self.idle_timer = None
        if self.busy:
            return
        left = self.idle_from + self.limits.keep_alive_s - self.loop.time()
        if left > 0:
            self.idle_timer = self.loop.call_later(left, self._idle_close)
        else:
            self._close()

    def _refuse(self, status: int, message: str) -> None:
        """Refuse what the parser is reading: answer, close, and execute nothing more from this connection.

        Callbacks raise ``_Refused`` right after, so httptools stops parsing the rest of the read;
        requests already queued were never started and are dropped with it. An answer in progress
        is written first (a client reads answers in order: the refusal in its place would read as
        that request's, which may have been executed); a stream in progress ends for it.
        """
        if self.refused:
            return
        self.refused = True
        self.queue = None
        refusal = edge.closing_refusal(status, message, date_line())
        if self.busy:
            self.refusal = refusal
            if self.stream is not None:
                self.stream.stop()
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(refusal)
            self._close()
