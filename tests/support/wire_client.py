"""A minimal client of polysocket's HTTP wire protocol, as a browser would speak it (for tests).

Relay fqdns like ``abc.node1.localhost:PORT`` resolve in browsers and curl but not through glibc,
so requests go to 127.0.0.1:PORT with the fqdn as the Host header.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson


def decode_jsonp(body: bytes, cb: str) -> dict[str, Any]:
    prefix = b"/**/" + cb.encode() + b"("
    assert body.startswith(prefix) and body.endswith(b");"), body[:200]
    return dict(orjson.loads(body[len(prefix):-2]))


@dataclass
class Conn:
    http: httpx.AsyncClient
    fqdn: str
    socket: str
    protocol: str
    seq: int = 0
    ack: int = -1
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def base(self) -> str:
        port = self.fqdn.rsplit(":", 1)[1]
        return f"http://127.0.0.1:{port}"

    async def get(self, path: str, params: dict[str, Any], cb: str | None = None) -> httpx.Response:
        q = {**params, "socket": self.socket}
        if cb is not None:
            q["cb"] = cb
        return await self.http.get(f"{self.base}{path}?{urlencode(q)}", headers={"host": self.fqdn})

    async def call(self, path: str, params: dict[str, Any], cb: str | None = None) -> dict[str, Any]:
        resp = await self.get(path, params, cb)
        if cb is not None:
            assert resp.status_code == 200
            return decode_jsonp(resp.content, cb)
        return dict(resp.json())

    async def send_text(self, text: str, *, seq: int | None = None, fin: bool = True,
                        ack: int | None = None) -> dict[str, Any]:
        """``ack``: the highest seq processed, riding on the send (as a streaming client does)."""
        params: dict[str, Any] = {"t": "t", "d": text}
        if ack is not None:
            params["ack"] = ack
        return await self._send(params, seq, fin)

    async def send_binary(self, data: bytes, *, seq: int | None = None, fin: bool = True) -> dict[str, Any]:
        return await self._send({"t": "b", "d": base64.b64encode(data).decode()}, seq, fin)

    async def _send(self, params: dict[str, Any], seq: int | None, fin: bool) -> dict[str, Any]:
        if seq is None:
            seq = self.seq
            self.seq += 1
        return await self.call("/send", {**params, "seq": seq, "fin": int(fin)})

    async def post(self, body: bytes, kind: str = "t", content_type: str = "text/plain",
                   seq: int | None = None, fin: bool = True) -> httpx.Response:
        if seq is None:
            seq = self.seq
            self.seq += 1
        q = urlencode({"socket": self.socket, "seq": seq, "t": kind, "fin": int(fin)})
        return await self.http.post(f"{self.base}/send?{q}", content=body,
                                    headers={"host": self.fqdn, "content-type": content_type})

    async def poll(self, ttl: int = 5000, ack: int | None = None) -> dict[str, Any]:
        return await self.call("/poll", {"ttl": ttl, "ack": self.ack if ack is None else ack})

    async def receive(self, count: int, ttl: int = 5000, max_polls: int = 200) -> list[dict[str, Any]]:
        """Poll (acking as a browser would) until ``count`` new seq-carrying messages arrived."""
        got: list[dict[str, Any]] = []
        for _ in range(max_polls):
            if len(got) >= count:
                break
            answer = await self.poll(ttl)
            assert answer["ok"], answer
            for msg in answer["messages"]:
                if "seq" in msg and msg["seq"] > self.ack:
                    assert msg["seq"] == self.ack + 1, (msg["seq"], self.ack)
                    self.ack = msg["seq"]
                    got.append(msg)
        self.received.extend(got)
        return got

    async def close(self, code: int = 1000, reason: str = "") -> dict[str, Any]:
        return await self.call("/close", {"code": code, "reason": reason})


async def connect(http: httpx.AsyncClient, router_url: str, target: str, *, protocols: str = "",
                  cb: str | None = None, token: str | None = None,
                  headers: dict[str, str] | None = None) -> Conn:
    params = {"from": "pytest", "target": target}
    if protocols:
        params["protocols"] = protocols
    if token:
        params["token"] = token
    answer = await connect_raw(http, router_url, params, cb=cb, headers=headers)
    assert answer["ok"], answer
    return Conn(http, answer["fqdn"], answer["socket"], answer["protocol"])


async def connect_raw(http: httpx.AsyncClient, router_url: str, params: dict[str, Any], *,
                      cb: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    q = dict(params)
    if cb is not None:
        q["cb"] = cb
    resp = await http.get(f"{router_url}/connect?{urlencode(q)}", headers=headers or {})
    if cb is not None:
        return decode_jsonp(resp.content, cb)
    return {"status": resp.status_code, **resp.json()}
