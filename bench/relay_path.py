"""The relay's own CPU per echoed message on the streaming path, in one process, without sockets.

A quieter A/B than ``bench.stream_ab`` for changes to the relay's Python: the real protocol objects
(``RelayHTTPProtocol`` serving ``RelayEndpoints``, a ``RelaySocket`` over an ``Upstream`` driving
websockets' client protocol) over transports that only count bytes. One round trip is what the
relay does for it: parse a ``GET /send`` (with its ack) and answer it, write the WebSocket frame,
parse the target's echo frame and write it as an event on the open ``/stream``; the loop turns once
per round trip (as the answer of a send may need it). What it leaves out: the system calls, epoll
and uvloop's callbacks, which the same for both sides of an A/B.

    PYTHONPATH=/tmp/base python -m bench.relay_path      # (the tree whose relay is measured)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from polysocket_core.ids import new_socket_id
from polysocket_core.reservations import Reservation
from relay_node.edge.endpoints import CONSTANT_HEADERS, RelayEndpoints
from relay_node.edge.http1 import Connections, Limits, RelayHTTPProtocol, register_constant_headers
from relay_node.metrics import RelayMetrics
from relay_node.settings import RelayConfig
from relay_node.sockets.socket import RelaySocket
from relay_node.sockets.table import SocketTable
from relay_node.sockets.upstream import Upstream


class CountingTransport:
    """Takes every write; remembers only how many bytes."""

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


async def run(n: int, repeat: int) -> None:
    loop = asyncio.get_running_loop()
    config = RelayConfig(node_id="bench", fqdn="n1.localhost:1", stream_bytes=1 << 50)  # one stream throughout
    metrics = RelayMetrics()
    table = SocketTable(config, metrics)
    endpoints = RelayEndpoints(config, table, metrics)
    register_constant_headers(*CONSTANT_HEADERS)
    proto = ClientProtocol(parse_uri("ws://target/"), state=State.OPEN, max_size=config.max_message_bytes)
    up = Upstream(proto, config.close_timeout_s)
    up_transport = CountingTransport()
    up.connection_made(up_transport)  # type: ignore[arg-type]
    sid = new_socket_id()
    sock = RelaySocket(sid, up, config, metrics, lambda s: None, Reservation(table.ledger, "r", ""))
    table.sockets[sid] = sock
    connections = Connections()
    stream_conn = RelayHTTPProtocol(endpoints.answer, Limits(), connections, loop)
    stream_out = CountingTransport()
    stream_conn.connection_made(stream_out)  # type: ignore[arg-type]
    stream_conn.data_received(f"GET /stream?socket={sid}&ack=-1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await asyncio.sleep(0)
    send_conn = RelayHTTPProtocol(endpoints.answer, Limits(), connections, loop)
    send_out = CountingTransport()
    send_conn.connection_made(send_out)  # type: ignore[arg-type]
    payload = "x" * 64
    echo = Frame(Opcode.TEXT, payload.encode()).serialize(mask=False)
    seq = 0
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.process_time()
        for _ in range(n):
            send_conn.data_received(b"GET /send?socket=%b&seq=%d&d=%b&ack=%d HTTP/1.1\r\nHost: n1.localhost:1\r\n\r\n"
                                    % (sid.encode(), seq, payload.encode(), seq - 1))
            await asyncio.sleep(0)
            up.data_received(echo)
            seq += 1
        best = min(best, (time.process_time() - started) / n * 1e6)
    assert sock.outbound.next_seq == seq and up_transport.writes >= seq and stream_out.writes > seq
    print(f"relay path: {best:.2f} µs per round trip (best of {repeat} x {n}); writes per round trip: "
          f"send {send_out.writes / seq:.2f}, upstream {up_transport.writes / seq:.2f}, "
          f"stream {stream_out.writes / seq:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    gc.set_threshold(20_000, *gc.get_threshold()[1:])  # as the relay
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(run(args.messages, args.repeat))


if __name__ == "__main__":
    main()
