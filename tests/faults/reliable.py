"""A client of the wire protocol that does what polysocket.js does about lost answers: it retries a
request until it gets an answer (same ``seq`` for a send, same ``ack`` for a poll), drops messages
whose ``seq`` it already has, and checks that what arrives is in order. Half of its requests are
JSONP (``cb``), a fifth of its sends are POSTs, a fifth binary."""

from __future__ import annotations

import asyncio
import base64
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson

from tests.support.wire_client import decode_jsonp

from .rawhttp import RawHTTP

Message = tuple[str, str | bytes]  # ("text", str) or ("binary", bytes)


@dataclass
class ReliableSocket:
    port: int  # where requests go (the relay, or the proxy in front of it)
    host: str  # the socket's fqdn, sent as Host
    socket: str
    rng: random.Random
    timeout_s: float = 30.0  # a request without an answer by then is given up and retried
    max_attempts: int = 200
    transport_errors: int = 0
    failed_by_path: dict[str, int] = field(default_factory=dict)
    received: list[Message] = field(default_factory=list)
    close: dict[str, Any] | None = None
    ack: int = -1
    duplicates_seen: int = 0
    _idle: list[RawHTTP] = field(default_factory=list)  # keep-alive connections not in use

    def shutdown(self) -> None:
        for raw in self._idle:
            raw.close()
        self._idle.clear()

    async def request(self, path: str, params: dict[str, Any], body: bytes | None = None,
                      content_type: str = "text/plain") -> dict[str, Any]:
        """One protocol request, repeated until an answer arrives; the answer, decoded."""
        for attempt in range(self.max_attempts):
            q = {**params, "socket": self.socket}
            cb = None
            if body is None and self.rng.random() < 0.5:
                cb = q["cb"] = f"ps.cb{attempt}"
            target = f"{path}?{urlencode(q)}"
            raw = self._idle.pop() if self._idle else RawHTTP(self.port, self.host)
            try:
                if body is None:
                    status, _, payload = await asyncio.wait_for(raw.request("GET", target), self.timeout_s)
                else:
                    status, _, payload = await asyncio.wait_for(
                        raw.request("POST", target, body, {"content-type": content_type}), self.timeout_s)
            except (ConnectionError, OSError):  # refused, reset, closed without an answer, timed out
                raw.close()
                self.transport_errors += 1
                self.failed_by_path[path] = self.failed_by_path.get(path, 0) + 1
                await asyncio.sleep(0.005 * min(attempt, 10))
                continue
            self._idle.append(raw)
            if cb is not None:
                assert status == 200, status
                return decode_jsonp(payload, cb)
            return dict(orjson.loads(payload))
        raise AssertionError(f"{path}: no answer after {self.max_attempts} attempts")

    async def send(self, seq: int, msg: Message) -> None:
        kind, data = msg
        if kind == "binary":
            assert isinstance(data, bytes)
            if self.rng.random() < 0.5:
                answer = await self.request("/send", {"seq": seq, "t": "b"}, body=data,
                                            content_type="application/octet-stream")
            else:
                answer = await self.request("/send", {"seq": seq, "t": "b", "d": base64.b64encode(data).decode()})
        else:
            assert isinstance(data, str)
            if self.rng.random() < 0.2:
                answer = await self.request("/send", {"seq": seq, "t": "t"}, body=data.encode())
            else:
                answer = await self.request("/send", {"seq": seq, "t": "t", "d": data})
        assert answer == {"ok": True}, (seq, answer)

    async def send_all(self, messages: list[Message], window: int) -> None:
        """Every message, ``window`` requests in flight (so they reach the relay out of order)."""
        gate = asyncio.Semaphore(window)

        async def one(seq: int, msg: Message) -> None:
            async with gate:
                await self.send(seq, msg)

        await asyncio.gather(*(one(i, m) for i, m in enumerate(messages)))

    async def receive(self, count: int, ttl_ms: int = 1000) -> list[Message]:
        """Poll until ``count`` messages arrived (or a close); acknowledges as it goes."""
        while len(self.received) < count and self.close is None:
            answer = await self.request("/poll", {"ttl": ttl_ms, "ack": self.ack})
            assert answer["ok"], answer
            self._take(answer["messages"])
        return self.received

    def _take(self, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            if "seq" not in m:
                continue
            if m["seq"] <= self.ack:
                self.duplicates_seen += 1  # redelivered after a lost answer: dropped, as the protocol says
                continue
            assert m["seq"] == self.ack + 1, ("out of order", m["seq"], self.ack)
            self.ack = m["seq"]
            if m["type"] == "close":
                self.close = m
            elif m["type"] == "binary":
                self.received.append(("binary", base64.b64decode(m["data"])))
            else:
                self.received.append(("text", m["data"]))

    async def close_and_collect(self, code: int = 1000, reason: str = "done") -> dict[str, Any]:
        answer = await self.request("/close", {"code": code, "reason": reason})
        assert answer["ok"], answer
        while self.close is None:  # the relay keeps the close until it is acknowledged
            answer = await self.request("/poll", {"ttl": 1000, "ack": self.ack})
            assert answer["ok"], answer
            self._take(answer["messages"])
        # Acknowledges the close; if this answer is lost the socket is already freed, and the
        # retry is answered unknown_socket, which is what a client that has its close expects.
        await self.request("/poll", {"ttl": 0, "ack": self.ack})
        return self.close
