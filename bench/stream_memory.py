"""Relay memory of an idle socket whose receiver is an open ``GET /stream``, against one whose
receiver is a waiting long poll (issue 12's ≤ 12 KiB per idle socket).

Two relays of one stack: sockets opened through the router land on both; on one relay every
socket gets a waiting poll, on the other an open stream, each on its own HTTP connection. The RSS
growth of each relay, divided by its sockets, is reported after the sockets were opened (upstream
only) and after the receivers were added.

    PYTHONPATH=$PWD .venv/bin/python -m bench.stream_memory --sockets 1000
"""

from __future__ import annotations

import argparse
import asyncio
from urllib.parse import urlencode

import httpx

from polysocket_cli.processes import Stack

from .procstat import memory_kib


async def open_receiver(port: int, fqdn: str, path: str, sid: str) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    query = urlencode({"socket": sid, "ttl": 55000})
    writer.write(f"GET {path}?{query} HTTP/1.1\r\nHost: {fqdn}\r\n\r\n".encode())
    if path == "/stream":
        await reader.readuntil(b":ok\n\n")  # the stream is open
    return writer


async def settle_rss(pid: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return memory_kib(pid)["rss"]


async def run(n: int, settle: float) -> None:
    s = Stack()
    try:
        s.start_valkey()
        quiet = {"POLYSOCKET_LOG_LEVEL": "warning"}
        relays = {name: s.start_relay(name, extra=["--idle-timeout", "600", "--capacity", str(2 * n + 10)],
                                      env=quiet) for name in ("polls", "streams")}
        router = s.start_router(env={"POLYSOCKET_RATE_PER_IP": "0/1", "POLYSOCKET_RATE_PER_TOKEN": "0/1"})
        token = s.create_token(max_sockets=4 * n)
        echo = s.start_echo()
        target = f"ws://127.0.0.1:{echo.port}/"
        empty = {name: memory_kib(p.popen.pid)["rss"] for name, p in relays.items()}
        by_relay: dict[str, list[tuple[str, str]]] = {name: [] for name in relays}
        async with httpx.AsyncClient(timeout=30) as http:
            sem = asyncio.Semaphore(20)

            async def connect() -> None:
                async with sem:
                    q = urlencode({"from": "bench", "target": target, "token": token})
                    answer = (await http.get(f"http://127.0.0.1:{router.port}/connect?{q}")).json()
                    assert answer["ok"], answer
                    by_relay[answer["fqdn"].split(".")[1]].append((answer["fqdn"], answer["socket"]))

            await asyncio.gather(*(connect() for _ in range(2 * n)))
        sockets = {name: await settle_rss(p.popen.pid, settle) for name, p in relays.items()}
        writers = []
        for name, path in (("polls", "/poll"), ("streams", "/stream")):
            port = relays[name].port
            for fqdn, sid in by_relay[name]:
                writers.append(await open_receiver(port, fqdn, path, sid))
        received = {name: await settle_rss(p.popen.pid, settle) for name, p in relays.items()}
        print(f"{'receiver':<10} {'sockets':>7} {'KiB/socket (upstream only)':>27} "
              f"{'KiB/socket (with receiver)':>27} {'KiB per receiver':>17}")
        for name in relays:
            k = len(by_relay[name])
            print(f"{name:<10} {k:>7} {(sockets[name] - empty[name]) / k:>27.1f} "
                  f"{(received[name] - empty[name]) / k:>27.1f} {(received[name] - sockets[name]) / k:>17.2f}")
        for w in writers:
            w.close()
    finally:
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sockets", type=int, default=1000, help="sockets per relay (about)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before each RSS reading")
    args = ap.parse_args()
    asyncio.run(run(args.sockets, args.settle))


if __name__ == "__main__":
    main()
