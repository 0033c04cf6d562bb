"""Relay + echo-target CPU per echoed message, receiving with ``GET /stream`` against long polling.

A quick A/B on one stack, not the peer benchmark (``python -m bench``): N sessions each do M
round trips (send 64 bytes, wait for the echo); with ``poll`` each round trip is a send and a poll,
with ``stream`` a send (carrying the ack) and one event on the session's open stream. Modes
alternate so drift on a shared machine hits both.

    PYTHONPATH=$PWD .venv/bin/python -m bench.stream_cpu --sessions 100 --messages 100
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from polysocket_cli.processes import Stack

from .procstat import cpu_seconds, loadavg


class Http:
    """One keep-alive connection to the relay, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fqdn: str) -> None:
        self.reader, self.writer, self.fqdn = reader, writer, fqdn

    @classmethod
    async def open(cls, port: int, fqdn: str) -> Http:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, fqdn)

    def request(self, path: str, query: dict[str, Any]) -> None:
        self.writer.write(f"GET {path}?{urlencode(query)} HTTP/1.1\r\nHost: {self.fqdn}\r\n\r\n".encode())

    async def get(self, path: str, query: dict[str, Any]) -> Any:
        self.request(path, query)
        head = await self.reader.readuntil(b"\r\n\r\n")
        size = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        return orjson.loads(await self.reader.readexactly(size))


class Events:
    """The seqs of a stream's events, read as the chunks arrive (``None``: the stream ended)."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.buf = b""

    async def next_seq(self) -> int | None:
        reader = self.http.reader
        while True:
            block, sep, rest = self.buf.partition(b"\n\n")
            if sep:
                self.buf = rest
                if block.startswith(b"id: "):
                    return int(block[4:block.index(b"\n")])
                continue
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            if size == 0:
                await reader.readexactly(2)
                return None
            self.buf += (await reader.readexactly(size + 2))[:-2]


async def open_stream(port: int, fqdn: str, sid: str, ack: int) -> Events:
    http = await Http.open(port, fqdn)
    http.request("/stream", {"socket": sid, "ack": ack})
    await http.reader.readuntil(b"\r\n\r\n")
    return Events(http)


async def session(port: int, fqdn: str, sid: str, mode: str, m: int) -> None:
    sender = await Http.open(port, fqdn)
    ack = -1
    if mode == "stream":
        events = await open_stream(port, fqdn, sid, ack)
        for i in range(m):
            await sender.get("/send", {"socket": sid, "seq": i, "d": "x" * 64, "ack": ack})
            while True:
                seq = await events.next_seq()
                if seq is None:  # the byte or time budget ended it: resume
                    events = await open_stream(port, fqdn, sid, ack)
                elif seq > ack:
                    ack = seq
                    break
    else:
        poller = await Http.open(port, fqdn)
        for i in range(m):
            await sender.get("/send", {"socket": sid, "seq": i, "d": "x" * 64})
            while True:
                answer = await poller.get("/poll", {"socket": sid, "ack": ack, "ttl": 5000})
                seqs = [msg["seq"] for msg in answer["messages"] if "seq" in msg]
                if seqs and max(seqs) > ack:
                    ack = max(seqs)
                    break


async def run(n: int, m: int, rounds: int) -> None:
    s = Stack()
    try:
        s.start_valkey()
        quiet = {"POLYSOCKET_LOG_LEVEL": "warning"}
        relay = s.start_relay("n1", extra=["--capacity", str(4 * n * rounds + 10)], env=quiet)
        router = s.start_router(env={**quiet, "POLYSOCKET_RATE_PER_IP": "0/1", "POLYSOCKET_RATE_PER_TOKEN": "0/1"})
        token = s.create_token(max_sockets=4 * n * rounds + 10)
        echo = s.start_echo()
        target = f"ws://127.0.0.1:{echo.port}/"
        totals: dict[str, list[tuple[float, float]]] = {"poll": [], "stream": []}
        async with httpx.AsyncClient(timeout=30) as http:
            for mode in ["poll", "stream"] * rounds:
                socks = []
                for _ in range(n):
                    q = urlencode({"from": "bench", "target": target, "token": token})
                    answer = (await http.get(f"http://127.0.0.1:{router.port}/connect?{q}")).json()
                    socks.append((answer["fqdn"], answer["socket"]))
                relay0, echo0 = cpu_seconds(relay.popen.pid), cpu_seconds(echo.popen.pid)
                started = time.monotonic()
                await asyncio.gather(*(session(relay.port, fqdn, sid, mode, m) for fqdn, sid in socks))
                per_relay = (cpu_seconds(relay.popen.pid) - relay0) / (n * m) * 1e6
                per_echo = (cpu_seconds(echo.popen.pid) - echo0) / (n * m) * 1e6
                totals[mode].append((per_relay, per_echo))
                print(f"{mode:<6} {n} sessions x {m}: CPU per message relay {per_relay:.0f} µs, echo "
                      f"{per_echo:.0f} µs ({time.monotonic() - started:.1f} s, load {loadavg()})")
        for mode, values in totals.items():
            relays = sorted(v[0] for v in values)
            both = sorted(v[0] + v[1] for v in values)
            print(f"{mode:<6} median: relay {relays[len(relays) // 2]:.0f} µs/message, "
                  f"relay+echo {both[len(both) // 2]:.0f} µs/message")
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--messages", type=int, default=100, help="round trips per session")
    ap.add_argument("--rounds", type=int, default=3, help="poll/stream alternations")
    args = ap.parse_args()
    asyncio.run(run(args.sessions, args.messages, args.rounds))


if __name__ == "__main__":
    main()
