"""How long a browser's native WebSocket takes to open on a slow but working network: the figure
``nativeTimeout`` (client/src/socket.js, 8 s) is argued from (docs/client.md, "Network verdicts").

Chromium (Debian's, through Playwright) opens ``ws://`` sockets to a ``websockets`` echo server on
loopback through a delay line: a TCP forwarder that models a round trip time RTT, holding the
connection's first byte for one RTT (the TCP handshake the browser would wait for) and every chunk
for RTT/2 each way. A ``ws://`` open is then TCP + upgrade, 2 RTT; ``wss://`` adds the TLS handshake
(1 RTT with TLS 1.3, 2 with 1.2) and a name lookup that misses the cache 1 more, which are added by
arithmetic and said so in the table. (Chromium's DevTools latency emulation adds its latency once per
request, not per round trip, so it would understate a WebSocket open.)

    .venv/bin/python -m bench.native_open [--rtt 50,150,300,600,1000,2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable

import websockets

from polysocket_cli.processes import free_port

CHROMIUM = "/usr/bin/chromium"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward what arrives, each chunk ``delay`` seconds after it arrived, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    while True:
        data = await reader.read(65536)
        queue.put_nowait((time.monotonic() + delay, data))
        if not data:
            break
    await sender


def delay_line(rtt: float, upstream_port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                            Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(rtt)  # the TCP handshake: nothing goes before it
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pipe(reader, up_writer, rtt / 2), _pipe(up_reader, writer, rtt / 2),
                             return_exceptions=True)
    return handle


def serve(rtts: list[float], loop_ready: threading.Event, ports: dict[float, int]) -> None:
    async def main() -> None:
        async def echo(ws: websockets.ServerConnection) -> None:
            async for m in ws:
                await ws.send(m)
        def page(conn: websockets.ServerConnection, request: websockets.Request) -> websockets.Response | None:
            # a page of a loopback origin (Chromium refuses about:blank's ws:// to loopback)
            return None if "upgrade" in request.headers else conn.respond(200, "page")

        echo_port = free_port()
        ports[0] = echo_port
        async with websockets.serve(echo, "127.0.0.1", echo_port, process_request=page):
            for rtt in rtts:
                port = free_port()
                await asyncio.start_server(delay_line(rtt, echo_port), "127.0.0.1", port)
                ports[rtt] = port
            loop_ready.set()
            await asyncio.Future()
    asyncio.run(main())


OPEN = """(url) => new Promise((resolve) => {
  const t0 = performance.now();
  const ws = new WebSocket(url);
  ws.onopen = () => { resolve(performance.now() - t0); ws.close(); };
  ws.onerror = () => resolve(-1);
})"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", default="50,150,300,600,1000,2000", help="round trip times in ms")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rtts = [int(x) / 1000 for x in args.rtt.split(",")]
    ready = threading.Event()
    ports: dict[float, int] = {}
    threading.Thread(target=serve, args=(rtts, ready, ports), daemon=True).start()
    if not ready.wait(20):
        raise SystemExit("the echo server and delay lines did not start")
    from playwright.sync_api import sync_playwright

    print(f"| RTT | ws:// open, measured (median of {args.repeat}) | wss:// estimate, + TLS 1.3 + a DNS miss "
          "(+2 RTT) |")
    print("|---|---|---|")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{ports[0]}/page")
        for rtt in rtts:
            times = [page.evaluate(OPEN, f"ws://127.0.0.1:{ports[rtt]}/") for _ in range(args.repeat)]
            if min(times) < 0:
                raise SystemExit(f"a socket failed at RTT {rtt}")
            med = statistics.median(times)
            print(f"| {rtt * 1000:.0f} ms | {med:.0f} ms ({med / (rtt * 1000):.2f} RTT) | "
                  f"{med + 2 * rtt * 1000:.0f} ms |")
        browser.close()


if __name__ == "__main__":
    main()
