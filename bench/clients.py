"""The kinds of client session the bench drives, each a closed loop of 64-byte text echoes.

* ``PolysocketSession``: the real wire protocol, as polysocket.js speaks it — ``/connect`` through
  the router, then JSONP ``/send?seq=`` on one keep-alive connection and one long ``/poll?ack=``
  always outstanding on another.
* ``PolysocketStreamSession``: the streaming receive transport (issue 12): one ``GET /stream?ack=``
  held open and parsed as it arrives, ``POST /send?ack=`` (CORS, as the xhr transport sends) on
  another connection, the stream reopened with ``ack`` when the relay ends it.
* ``DirectSession``: a plain WebSocket (``websockets``) to the same echo target: the upstream hop alone.
* ``SocketIOSession``: python-socketio's Engine.IO v4 polling transport (GET polls, POST sends).
* ``EngineIOSession``: Engine.IO v4 polling with raw messages (``4<text>``), against Node's engine.io.
* ``SockJSSession``: sockjs-node's xhr-polling (``POST /xhr``, ``POST /xhr_send``) or jsonp-polling
  (``GET /jsonp?c=``, form ``POST /jsonp_send``).

Each session has ``echo(payload)`` (one round trip), ``close()``, and keeps its receive loop
running in the background so an idle session still exchanges heartbeats (counted in ``heartbeats``).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect

from .http1 import HttpConn
from .sse import SseParser

JSONP_CB = b"c"
_JSONP_HEAD = len(b"/**/c(")


def payload(session: int, n: int, size: int = 64) -> str:
    """A URL-safe text message of exactly ``size`` bytes, unique per session and round trip."""
    head = f"{session:06d}-{n:012d}-"
    return head + "x" * (size - len(head))


class BenchError(RuntimeError):
    pass


@dataclass
class Recorder:
    """Round trips completed while ``recording``; sessions stop their loop when ``running`` drops."""

    running: bool = True
    recording: bool = False
    count: int = 0
    errors: int = 0
    rtts: list[float] = field(default_factory=list)

    def add(self, rtt: float) -> None:
        if self.recording:
            self.count += 1
            self.rtts.append(rtt)


class Session:
    idx: int

    async def echo(self, data: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def loop(self, rec: Recorder) -> None:
        n = 0
        perf = time.perf_counter
        while rec.running:
            data = payload(self.idx, n)
            n += 1
            t0 = perf()
            try:
                await self.echo(data)
            except Exception:
                rec.errors += 1
                raise
            rec.add(perf() - t0)


def fail_pending(session: PolysocketSession | EngineIOSession | SockJSSession, exc: Exception) -> None:
    """A polling session's receive loop died: record why and fail the echo waiting on it."""
    session.error = repr(exc)
    fut = session.pending
    if fut is not None and not fut.done():
        fut.set_exception(BenchError(f"poll loop failed: {exc!r}"))


# polysocket


class PolysocketSession(Session):
    def __init__(self, idx: int, poll_ttl_ms: int = 25_000) -> None:
        self.idx = idx
        self.poll_ttl_ms = poll_ttl_ms
        self.fqdn = ""
        self.socket = b""
        self.port = 0
        self.seq = 0
        self.ack = -1
        self.poll_conn: HttpConn | None = None
        self.send_conn: HttpConn | None = None
        self.pending: asyncio.Future[str] | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.heartbeats = 0
        self.error: str | None = None

    async def open(self, router: HttpConn, target: str) -> float:
        """Connect through the router; return the connect latency in seconds."""
        t0 = time.perf_counter()
        _status, body = await router.get(b"/connect?cb=c&from=polysocket-bench&target="
                                        + quote(target, safe="").encode())
        latency = time.perf_counter() - t0
        answer = orjson.loads(body[_JSONP_HEAD:-2])
        if not answer.get("ok"):
            raise BenchError(f"connect failed: {answer}")
        self.fqdn = answer["fqdn"]
        self.socket = answer["socket"].encode()
        self.port = int(self.fqdn.rsplit(":", 1)[1])
        self.poll_conn = await HttpConn.open(self.port, self.fqdn)
        self.poll_task = asyncio.get_running_loop().create_task(self._poll_loop())
        return latency

    async def _poll_loop(self) -> None:
        conn = self.poll_conn
        assert conn is not None
        try:
            while True:
                _, body = await conn.get(b"/poll?cb=c&socket=%s&ttl=%d&ack=%d"
                                         % (self.socket, self.poll_ttl_ms, self.ack))
                answer = orjson.loads(body[_JSONP_HEAD:-2])
                if not answer["ok"]:
                    raise BenchError(f"poll failed: {answer}")
                for m in answer["messages"]:
                    if "seq" not in m:
                        self.heartbeats += 1
                    elif self._deliver(m):
                        # acknowledge the close so the relay forgets the socket now
                        await conn.get(b"/poll?cb=c&socket=%s&ttl=0&ack=%d" % (self.socket, self.ack))
                        self.closed.set()
                        return
        except Exception as exc:
            fail_pending(self, exc)
            self.closed.set()

    def _deliver(self, m: dict[str, Any]) -> bool:
        """One message of a poll answer or a stream: processed once (a redelivered seq is skipped);
        True when it is the close."""
        seq = m["seq"]
        if seq <= self.ack:
            return False  # redelivered (by a poll whose answer was lost, or a new stream): processed
        self.ack = seq
        kind: str = m["type"]
        if kind == "text":
            fut = self.pending
            if fut is not None and not fut.done():
                fut.set_result(m["data"])
        return kind == "close"

    async def _send_conn(self) -> HttpConn:
        if self.send_conn is None:
            self.send_conn = await HttpConn.open(self.port, self.fqdn)
        return self.send_conn

    async def echo(self, data: str) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending = fut
        conn = self.send_conn or await self._send_conn()
        _, body = await conn.get(b"/send?cb=c&socket=%s&seq=%d&d=%s" % (self.socket, self.seq, data.encode()))
        if body != b'/**/c({"ok":true});':
            raise BenchError(f"send failed: {body[:200]!r}")
        self.seq += 1
        got = await fut
        if got != data:
            raise BenchError(f"echo mismatch: {got!r} != {data!r}")

    async def close(self) -> None:
        try:
            conn = self.send_conn or await self._send_conn()
            await conn.get(b"/close?cb=c&socket=%s" % self.socket)
            await asyncio.wait_for(self.closed.wait(), 10)
        finally:
            if self.poll_task is not None:
                self.poll_task.cancel()
            for c in (self.poll_conn, self.send_conn):
                if c is not None:
                    c.close()


class PolysocketStreamSession(PolysocketSession):
    """The streaming receive transport (docs/protocol.md, ``GET /stream``), as the xhr transport uses it.

    One ``GET /stream?socket=&ttl=&ack=`` is held open on the receive connection and parsed as its
    bytes arrive (events ``id:``/``data:``, comments ``:hb``); when the relay ends it (byte or time
    budget) the next one opens with ``ack`` = the highest seq processed. Sends are
    ``POST /send?socket=&seq=&ack=`` with the text as the body, a JSON answer: the ack on every
    send frees the relay's buffer without waiting for the stream to end.
    """

    def __init__(self, idx: int, poll_ttl_ms: int = 25_000) -> None:
        super().__init__(idx, poll_ttl_ms)
        self.streams = 0  # streams opened (1 + the times the relay ended one and it was reopened)
        self.close_seq: int | None = None
        self._parser = SseParser()

    def _on_stream_bytes(self, data: bytes) -> None:
        events, comments = self._parser.feed(data)
        for comment in comments:
            if comment == b"hb":
                self.heartbeats += 1
        for _id, body in events:
            if self._deliver(orjson.loads(body)):
                self.close_seq = self.ack

    async def _poll_loop(self) -> None:
        conn = self.poll_conn
        assert conn is not None
        try:
            while True:
                self._parser = SseParser()  # a new response: nothing carries over
                self.streams += 1
                status, body = await conn.stream(b"/stream?socket=%s&ttl=%d&ack=%d"
                                                 % (self.socket, self.poll_ttl_ms, self.ack),
                                                 self._on_stream_bytes)
                if status != 200:
                    raise BenchError(f"stream failed: {status} {body[:200]!r}")
                if self.close_seq is not None:
                    # acknowledge the close so the relay forgets the socket now
                    await conn.get(b"/poll?socket=%s&ttl=0&ack=%d" % (self.socket, self.close_seq))
                    self.closed.set()
                    return
        except Exception as exc:
            fail_pending(self, exc)
            self.closed.set()

    async def echo(self, data: str) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending = fut
        conn = self.send_conn or await self._send_conn()
        status, body = await conn.post(b"/send?socket=%s&seq=%d&ack=%d" % (self.socket, self.seq, self.ack),
                                       data.encode())
        if status != 200 or body != b'{"ok":true}':
            raise BenchError(f"send failed: {status} {body[:200]!r}")
        self.seq += 1
        got = await fut
        if got != data:
            raise BenchError(f"echo mismatch: {got!r} != {data!r}")


# direct WebSocket


class DirectSession(Session):
    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.ws: ClientConnection | None = None

    async def open(self, target: str) -> float:
        t0 = time.perf_counter()
        # the relay's own upstream settings: no compression
        self.ws = await connect(target, compression=None, open_timeout=30, ping_interval=20, ping_timeout=20)
        return time.perf_counter() - t0

    async def echo(self, data: str) -> None:
        ws = self.ws
        assert ws is not None
        await ws.send(data)
        got = await ws.recv()
        if got != data:
            raise BenchError(f"echo mismatch: {got!r} != {data!r}")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


# Engine.IO v4 polling: raw messages (Node's engine.io) and socket.io events on top (python-socketio)


class EngineIOSession(Session):
    """Engine.IO v4 polling as engine.io-client does it: GET long-polls, POST sends, pongs."""

    PATH = b"/engine.io/?EIO=4&transport=polling"

    def __init__(self, idx: int, port: int) -> None:
        self.idx = idx
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.sid = b""
        self.poll_conn: HttpConn | None = None
        self.send_conn: HttpConn | None = None
        self.send_lock = asyncio.Lock()
        self.pending: asyncio.Future[str] | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.pongs: set[asyncio.Task[None]] = set()
        self.heartbeats = 0
        self.error: str | None = None

    async def open(self) -> float:
        t0 = time.perf_counter()
        self.poll_conn = await HttpConn.open(self.port, self.host)
        _, body = await self.poll_conn.get(self.PATH)
        if not body.startswith(b"0"):
            raise BenchError(f"engine.io open failed: {body[:200]!r}")
        self.sid = orjson.loads(body[1:])["sid"].encode()
        self.poll_task = asyncio.get_running_loop().create_task(self._poll_loop())
        await self._opened()
        return time.perf_counter() - t0

    async def _opened(self) -> None:
        """Anything after the handshake before the session may send (raw engine.io: nothing)."""

    def _packet(self, packet: bytes) -> None:
        """A packet other than ping / close: a raw message is ``4<text>``."""
        if packet.startswith(b"4"):
            self._deliver(packet[1:].decode())

    def _encode(self, data: str) -> bytes:
        return b"4" + data.encode()

    def _deliver(self, data: str) -> None:
        fut = self.pending
        if fut is not None and not fut.done():
            fut.set_result(data)

    async def _post(self, packet: bytes) -> None:
        async with self.send_lock:
            if self.send_conn is None:  # opened on first use, as a browser's second connection is
                self.send_conn = await HttpConn.open(self.port, self.host)
            status, body = await self.send_conn.post(self.PATH + b"&sid=" + self.sid, packet)
        if status != 200 or body.lower() != b"ok":
            raise BenchError(f"engine.io post failed: {status} {body[:200]!r}")

    async def _poll_loop(self) -> None:
        conn = self.poll_conn
        assert conn is not None
        target = self.PATH + b"&sid=" + self.sid
        try:
            while True:
                status, body = await conn.get(target)
                if status != 200:
                    raise BenchError(f"engine.io poll failed: {status} {body[:200]!r}")
                for packet in body.split(b"\x1e"):
                    if packet == b"2":  # ping: answer with a pong
                        self.heartbeats += 1
                        task = asyncio.get_running_loop().create_task(self._post(b"3"))
                        self.pongs.add(task)
                        task.add_done_callback(self.pongs.discard)
                    elif packet.startswith(b"1"):  # engine.io close
                        return
                    else:
                        self._packet(packet)
        except Exception as exc:
            fail_pending(self, exc)

    async def echo(self, data: str) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending = fut
        await self._post(self._encode(data))
        got = await fut
        if got != data:
            raise BenchError(f"echo mismatch: {got!r} != {data!r}")

    async def close(self) -> None:
        try:
            await self._post(b"1")  # engine.io close
        except Exception:
            pass
        finally:
            if self.poll_task is not None:
                self.poll_task.cancel()
            for c in (self.poll_conn, self.send_conn):
                if c is not None:
                    c.close()


class SocketIOSession(EngineIOSession):
    """socket.io on Engine.IO v4 polling: CONNECT to ``/``, then ``42["echo",…]`` events."""

    PATH = b"/socket.io/?EIO=4&transport=polling"

    def __init__(self, idx: int, port: int) -> None:
        super().__init__(idx, port)
        self.connected = asyncio.Event()

    async def _opened(self) -> None:
        await self._post(b"40")  # socket.io CONNECT to the default namespace
        await asyncio.wait_for(self.connected.wait(), 30)

    def _packet(self, packet: bytes) -> None:
        if packet.startswith(b"42"):
            self._deliver(orjson.loads(packet[2:])[1])
        elif packet.startswith(b"40"):
            self.connected.set()

    def _encode(self, data: str) -> bytes:
        return b'42["echo","' + data.encode() + b'"]'


# sockjs-node: xhr-polling and jsonp-polling


class SockJSSession(Session):
    """A SockJS session on one polling transport, as sockjs-client drives it.

    ``xhr``: ``POST <base>/xhr`` receives (one frame per answer), ``POST <base>/xhr_send`` with a
    JSON array of messages sends (204). ``jsonp``: ``GET <base>/jsonp?c=`` receives
    (``/**/c("<frame>");``), a form ``POST <base>/jsonp_send`` with ``d=<JSON array>`` sends
    ("ok"), as sockjs-client's hidden-form sender does. Frames: ``o`` open, ``h`` heartbeat,
    ``a[...]`` messages, ``c[code,reason]`` close. Closing = dropping the connections (sockjs
    polling has no close request; the server ends a session whose pending poll is aborted).
    """

    PREFIX = b"/echo"

    def __init__(self, idx: int, port: int, transport: str) -> None:
        if transport not in ("xhr", "jsonp"):
            raise ValueError(transport)
        self.idx = idx
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.jsonp = transport == "jsonp"
        # <prefix>/<server id>/<session id>: sockjs-client picks both at random
        self.base = self.PREFIX + b"/%03d/%s" % (idx % 1000, os.urandom(8).hex().encode())
        self.recv_target = self.base + (b"/jsonp?c=c" if self.jsonp else b"/xhr")
        self.send_target = self.base + (b"/jsonp_send" if self.jsonp else b"/xhr_send")
        self.poll_conn: HttpConn | None = None
        self.send_conn: HttpConn | None = None
        self.pending: asyncio.Future[str] | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.heartbeats = 0
        self.error: str | None = None

    async def _receive(self, conn: HttpConn) -> bytes:
        """One receive request; return the frame it answered."""
        if self.jsonp:
            status, body = await conn.get(self.recv_target)
        else:
            status, body = await conn.request(b"POST", self.recv_target, b"")
        if status != 200:
            raise BenchError(f"sockjs receive failed: {status} {body[:200]!r}")
        if self.jsonp:  # /**/c("<frame as a JSON string>");\r\n
            if not body.startswith(b"/**/c(") or not body.endswith(b");\r\n"):
                raise BenchError(f"sockjs jsonp answer: {body[:200]!r}")
            frame: bytes = orjson.loads(body[6:-4]).encode()
            return frame
        return body.rstrip(b"\n")

    async def open(self) -> float:
        t0 = time.perf_counter()
        self.poll_conn = await HttpConn.open(self.port, self.host)
        frame = await self._receive(self.poll_conn)
        if frame != b"o":
            raise BenchError(f"sockjs open failed: {frame[:200]!r}")
        self.poll_task = asyncio.get_running_loop().create_task(self._poll_loop())
        return time.perf_counter() - t0

    async def _poll_loop(self) -> None:
        conn = self.poll_conn
        assert conn is not None
        try:
            while True:
                frame = await self._receive(conn)
                kind = frame[:1]
                if kind == b"a":
                    for data in orjson.loads(frame[1:]):
                        fut = self.pending
                        if fut is not None and not fut.done():
                            fut.set_result(data)
                elif kind == b"h":
                    self.heartbeats += 1
                elif kind == b"c":
                    raise BenchError(f"sockjs session closed: {frame[:200]!r}")
                else:
                    raise BenchError(f"sockjs frame: {frame[:200]!r}")
        except Exception as exc:
            fail_pending(self, exc)

    async def echo(self, data: str) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending = fut
        conn = self.send_conn
        if conn is None:  # opened on first send, as polysocket's: an idle session holds one connection
            conn = self.send_conn = await HttpConn.open(self.port, self.host)
        messages = orjson.dumps([data])
        if self.jsonp:
            status, body = await conn.request(b"POST", self.send_target, b"d=" + quote(messages).encode(),
                                              b"application/x-www-form-urlencoded")
            ok = status == 200 and body == b"ok"
        else:
            status, body = await conn.request(b"POST", self.send_target, messages)
            ok = status == 204
        if not ok:
            raise BenchError(f"sockjs send failed: {status} {body[:200]!r}")
        got = await fut
        if got != data:
            raise BenchError(f"echo mismatch: {got!r} != {data!r}")

    async def close(self) -> None:
        if self.poll_task is not None:
            self.poll_task.cancel()
        for c in (self.poll_conn, self.send_conn):
            if c is not None:
                c.close()
