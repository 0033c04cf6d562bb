"""The three kinds of client session the bench drives, each a closed loop of 64-byte text echoes.

* ``PolysocketSession``: the real wire protocol, as polysocket.js speaks it — ``/connect`` through
  the router, then JSONP ``/send?seq=`` on one keep-alive connection and one long ``/poll?ack=``
  always outstanding on another.
* ``DirectSession``: a plain WebSocket (``websockets``) to the same echo target: the upstream hop alone.
* ``SocketIOSession``: python-socketio's Engine.IO v4 polling transport (GET polls, POST sends).

Each session has ``echo(payload)`` (one round trip), ``close()``, and keeps its poll running in the
background so an idle session still exchanges heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect

from .http1 import HttpConn

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


def fail_pending(session: PolysocketSession | SocketIOSession, exc: Exception) -> None:
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
                    seq = m.get("seq")
                    if seq is None:
                        self.heartbeats += 1
                        continue
                    if seq <= self.ack:
                        continue  # redelivered: already processed
                    self.ack = seq
                    kind = m["type"]
                    if kind == "text":
                        fut = self.pending
                        if fut is not None and not fut.done():
                            fut.set_result(m["data"])
                    elif kind == "close":
                        # acknowledge the close so the relay forgets the socket now
                        await conn.get(b"/poll?cb=c&socket=%s&ttl=0&ack=%d" % (self.socket, seq))
                        self.closed.set()
                        return
        except Exception as exc:
            fail_pending(self, exc)
            self.closed.set()

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


# python-socketio, Engine.IO v4 polling transport


class SocketIOSession(Session):
    PATH = b"/socket.io/?EIO=4&transport=polling"

    def __init__(self, idx: int, port: int) -> None:
        self.idx = idx
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.sid = b""
        self.poll_conn: HttpConn | None = None
        self.send_conn: HttpConn | None = None
        self.send_lock = asyncio.Lock()
        self.pending: asyncio.Future[str] | None = None
        self.connected = asyncio.Event()
        self.poll_task: asyncio.Task[None] | None = None
        self.pongs: set[asyncio.Task[None]] = set()
        self.heartbeats = 0
        self.error: str | None = None

    async def open(self) -> float:
        t0 = time.perf_counter()
        self.poll_conn = await HttpConn.open(self.port, self.host)
        self.send_conn = await HttpConn.open(self.port, self.host)
        _, body = await self.poll_conn.get(self.PATH)
        if not body.startswith(b"0"):
            raise BenchError(f"engine.io open failed: {body[:200]!r}")
        self.sid = orjson.loads(body[1:])["sid"].encode()
        self.poll_task = asyncio.get_running_loop().create_task(self._poll_loop())
        await self._post(b"40")  # socket.io CONNECT to the default namespace
        await asyncio.wait_for(self.connected.wait(), 30)
        return time.perf_counter() - t0

    async def _post(self, packet: bytes) -> None:
        assert self.send_conn is not None
        async with self.send_lock:
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
                    if packet.startswith(b"42"):
                        event = orjson.loads(packet[2:])
                        fut = self.pending
                        if fut is not None and not fut.done():
                            fut.set_result(event[1])
                    elif packet == b"2":  # ping: answer with a pong
                        self.heartbeats += 1
                        task = asyncio.get_running_loop().create_task(self._post(b"3"))
                        self.pongs.add(task)
                        task.add_done_callback(self.pongs.discard)
                    elif packet.startswith(b"40"):
                        self.connected.set()
                    elif packet.startswith(b"1"):  # engine.io close
                        return
        except Exception as exc:
            fail_pending(self, exc)

    async def echo(self, data: str) -> None:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending = fut
        await self._post(b'42["echo","' + data.encode() + b'"]')
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
