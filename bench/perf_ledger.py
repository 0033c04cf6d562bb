"""The small tricks of bench/PERF_LEDGER.md that no recorded run measured, each against its plain
alternative in the same process and the same run (rounds interleaved, median of the rounds).

    python -m bench.perf_ledger                         # markdown on stdout
    python -m bench.perf_ledger --rounds 9 --out bench/results/perf-ledger.md

Times are per call (µs, ``time.perf_counter`` around a tight loop); memory rows are Python
allocations (``tracemalloc``), which is what the trick changes. Compare the two columns of one
row; the absolute figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import secrets
import ssl
import statistics
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter
from websockets.client import ClientProtocol
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from polysocket_core import wire
from polysocket_core.edge import JSON_HEADERS, dumps, header_block
from relay_node.edge import http1
from relay_node.metrics import Count
from relay_node.sockets import upstream

QUERY = b"socket=AbCdEfGhIjKlMnOpQrStUv&seq=1234&t=t&d=hello%20world%2C%20this%20is%2064%20bytes&ack=1233&cb=cb_17"


@dataclasses.dataclass(frozen=True, slots=True)
class SendParamsDataclass:
    """What ``wire.SendParams`` was before it became a NamedTuple."""

    socket: str
    seq: int
    kind: str
    fin: bool
    data: bytes
    ack: int = -1


def per_call_us(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def opened_pair() -> tuple[ClientProtocol, ServerProtocol]:
    client, server = ClientProtocol(parse_uri("ws://localhost/")), ServerProtocol()
    client.send_request(client.connect())
    for data in client.data_to_send():
        server.receive_data(data)
    server.send_response(server.accept(server.events_received()[0]))  # type: ignore[arg-type]
    for data in server.data_to_send():
        client.receive_data(data)
    client.events_received()
    return client, server


def closed_client_left_bytes(close_parser: bool, n: int) -> float:
    """Python bytes still allocated per closed connection before the cycle collector runs."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            client, server = opened_pair()  # the target closes, the client answers, then EOF
            server.send_close(1000, "")
            for data in server.data_to_send():
                if data:
                    client.receive_data(data)
            client.events_received()
            client.data_to_send()
            client.receive_eof()
            server.parser.close()  # the target's side is not what is measured
            if close_parser:
                client.parser.close()
            del client, server
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
        gc.enable()
        gc.collect()


def allocated_bytes(make: Callable[[], object], n: int) -> float:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep = [make() for _ in range(n)]
        after = tracemalloc.get_traced_memory()[0]
        return (after - before - sys.getsizeof(keep)) / n
    finally:
        tracemalloc.stop()


def cpu_rows(n: int) -> list[tuple[str, str, Callable[[], object], str, Callable[[], object]]]:
    """(ledger row, trick, its call, plain alternative, its call)."""
    text_qs = QUERY.decode("ascii")
    http1.register_constant_headers(JSON_HEADERS)
    registry = CollectorRegistry()
    counter = Counter("bench_total", "bench", registry=registry)
    count = Count()
    client, _ = opened_pair()
    payload = b"x" * 64

    def bump_count() -> None:
        count.value += 1

    def websockets_frame() -> list[bytes]:
        client.send_text(payload)
        return client.data_to_send()

    return [
        ("lean-query-parse", "`wire.parse_query`", lambda: wire.parse_query(QUERY),
         "`dict(parse_qsl(...strict))`", lambda: dict(parse_qsl(text_qs, keep_blank_values=True, errors="strict"))),
        ("direct-fragments", "`wire.text_fragment`", lambda: wire.text_fragment(1234, "hello world"),
         "`dumps({seq, type, data})`", lambda: dumps({"seq": 1234, "type": "text", "data": "hello world"})),
        ("header-block-cache", "`cached_block` (registered list)", lambda: http1.cached_block(JSON_HEADERS),
         "`header_block`", lambda: header_block(JSON_HEADERS)),
        ("date-line-cache", "`date_line()`", http1.date_line,
         "`formatdate` per answer", lambda: b"date: %s\r\n" % formatdate(time.time(), usegmt=True).encode()),
        ("plain-metrics", "`Count.value += 1`", bump_count, "`prometheus_client.Counter.inc()`", counter.inc),
        ("sendparams-namedtuple", "`SendParams(...)` (NamedTuple)",
         lambda: wire.SendParams(socket="s", seq=1, kind="t", fin=True, data=b"x", ack=0),
         "frozen slots dataclass",
         lambda: SendParamsDataclass(socket="s", seq=1, kind="t", fin=True, data=b"x", ack=0)),
        ("mask-key-pool", "`_mask_key()` (4 KiB pool)", upstream._mask_key,
         "`secrets.token_bytes(4)`", lambda: secrets.token_bytes(4)),
        ("own-client-frame", "`client_frame(64 B, text)`", lambda: upstream.client_frame(payload, True),
         "`send_text` + `data_to_send`", websockets_frame),
        ("tls-context-shared", "`tls_context()` (shared)", upstream.tls_context,
         "`ssl.create_default_context()` (loads the CA store)", ssl.create_default_context),
    ]


def iterations(row: str, n: int) -> int:
    return max(n // 200, 20) if row == "tls-context-shared" else n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20_000, help="calls per round (the TLS row: /200)")
    ap.add_argument("--out", help="write the markdown here too")
    args = ap.parse_args()
    rows = cpu_rows(args.calls)
    times: dict[str, tuple[list[float], list[float]]] = {r[0]: ([], []) for r in rows}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for row, _, trick, _, plain in rows:
            k = iterations(row, args.calls)
            times[row][0].append(per_call_us(trick, k))
            times[row][1].append(per_call_us(plain, k))
    lines = [
        "# The ledger's small tricks against their plain alternatives (`python -m bench.perf_ledger`)",
        "",
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}. Median of {args.rounds} interleaved rounds.",
        "",
        "| ledger row | trick | µs per call | plain alternative | µs per call | plain / trick |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row, trick_name, _, plain_name, _ in rows:
        t, p = (statistics.median(v) for v in times[row])
        lines.append(f"| `{row}` | {trick_name} | {t:,.3f} | {plain_name} | {p:,.3f} | {p / t:,.1f} |")
    n = 2_000
    lines += [
        "",
        "| ledger row | trick | B per object | plain alternative | B per object |",
        "|---|---|---:|---|---:|",
        f"| `list-not-deque` | empty `list` | {allocated_bytes(list, n):.0f} | empty `collections.deque` | "
        f"{allocated_bytes(deque, n):.0f} |",
        f"| `parser-close` | closed connection, `parser.close()` | {closed_client_left_bytes(True, n):.0f} | "
        f"without it, until the cycle collector runs | {closed_client_left_bytes(False, n):.0f} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
