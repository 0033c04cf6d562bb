"""A new router's first connect to Redis over TLS: the row ``spare-blocking-connection``.

A new Lambda environment has no Redis connection. Its first connect runs the admission's pipeline
on the shared connection, then the pick's blocking pipeline on a connection of its own
(polysocket_redis.pipelines). Each connection costs a TCP handshake, a TLS handshake and ``AUTH``.
This measures that first connect's two pipelines from fresh ``DirectPipelines``, the way the
router's are built, against a real TLS ``redis-server`` requiring a password (as ElastiCache with
transit encryption and an auth token), in two variants, rounds interleaved:

* ``one-after-the-other``: the blocking pipeline opens its connection when it runs (before the spare);
* ``spare``: the shared connection's opening starts the blocking one's beside it (the code as it is).

Loopback has no network delay, and this kernel has no ``netem``. So ``--delay-ms`` puts a userland
forwarder, in a process of its own, between the client and Redis that holds every chunk that long
in each direction: a stand-in for the network from Lambda to ElastiCache (0 = loopback only). The
forwarder accepts the TCP connection itself, so the TCP handshake is not delayed; TLS, ``AUTH`` and
the pipelines are. Its threads sleep to each chunk's due time: ``bench/native_open.py``'s delay line
forwards on an event loop, whose timers round up to whole milliseconds (a first run through one here
could not tell 0.25 ms from 1 ms).

    PYTHONPATH=$PWD python -m bench.cold_connect --delay-ms 0,0.1,0.25,0.5 --rounds 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import socket
import statistics
import threading
import time

import uvloop

from polysocket_cli.processes import free_port, wait_port
from polysocket_core.redis_client import ANSWER_SOON
from polysocket_redis.pipelines import DirectPipelines, direct_pipelines
from tests.support.redis_tls import start_tls_redis  # the suite's TLS redis-server, not a copy of it


def _carry(source: socket.socket, sink: socket.socket, delay_s: float) -> None:
    """Bytes read from ``source`` written to ``sink`` ``delay_s`` later, in order (a reader thread and
    a writer thread, so a chunk read while another waits is not held longer than the delay)."""
    due: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

    def write() -> None:
        while True:
            at, data = due.get()
            if not data:
                sink.close()
                return
            time.sleep(max(0.0, at - time.monotonic()))  # clock_nanosleep: far finer than an event loop's ms
            try:
                sink.sendall(data)
            except OSError:
                return

    threading.Thread(target=write, daemon=True).start()
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        due.put((time.monotonic() + delay_s, data))
        if not data:
            return


def forwarder(listen_port: int, redis_port: int, delay_s: float) -> None:
    """Accepts on ``listen_port`` and carries each connection to Redis and back, delayed; ends with
    its parent (terminated) or when the parent's process group goes."""
    server = socket.create_server(("127.0.0.1", listen_port))
    while True:
        near, _ = server.accept()
        try:
            far = socket.create_connection(("127.0.0.1", redis_port))
            for end in (near, far):
                end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the client gave up already, or Redis is gone: this connection only
            near.close()
            continue
        for a, b in ((near, far), (far, near)):  # either side's end closes the other (its writer thread)
            threading.Thread(target=_carry, args=(a, b, delay_s), daemon=True).start()


async def first_connect(pipelines: DirectPipelines, n: int) -> None:
    """The router's first connect, as far as Redis: the admission, then the pick's blocking pipeline."""
    await pipelines.run([("HMGET", f"tok{n}", "id", "max_sockets"), ("RPUSH", f"reply{n}", b"x"),
                         ("EXPIRE", f"reply{n}", 60)])
    [popped] = await pipelines.run([("BLPOP", f"reply{n}", 1)], blocks=True)
    assert popped is not None


def fresh(url: str, ca_file: str, *, spare: bool) -> DirectPipelines:
    """A new environment's pipelines, as the router builds them; without the spare, as before it."""
    pipelines = direct_pipelines(url, patience=ANSWER_SOON, ca_file=ca_file, spare=spare)
    assert pipelines is not None
    return pipelines


async def measure(url: str, ca_file: str, rounds: int) -> dict[str, list[float]]:
    ms: dict[str, list[float]] = {"one-after-the-other": [], "spare": []}
    for n in range(rounds + 2):  # the first two rounds warm the imports and the TLS code up
        for name in (ms if n % 2 else reversed(ms)):
            pipelines = fresh(url, ca_file, spare=name == "spare")
            started = time.perf_counter()
            await first_connect(pipelines, n)
            if n >= 2:
                ms[name].append((time.perf_counter() - started) * 1000)
            await pipelines.aclose()
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", default="0,0.25,1", help="one-way delays to emulate, comma-separated")
    parser.add_argument("--rounds", type=int, default=40, help="first connects per variant and delay")
    args = parser.parse_args()
    redis = start_tls_redis()
    try:
        print("| one-way delay | one after the other: p50 ms | spare: p50 ms | spare / before | rounds |")
        print("|---:|---:|---:|---:|---:|")
        for delay_ms in (float(d) for d in args.delay_ms.split(",")):
            port = redis.port
            proc = None
            if delay_ms:
                port = free_port()
                proc = multiprocessing.Process(target=forwarder, args=(port, redis.port, delay_ms / 1000),
                                               daemon=True)
                proc.start()
                wait_port(port)
            try:
                ms = uvloop.run(measure(redis.url(port=port), str(redis.ca_file), args.rounds))
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.join(5)
            before, after = statistics.median(ms["one-after-the-other"]), statistics.median(ms["spare"])
            print(f"| {delay_ms:g} ms | {before:.2f} | {after:.2f} | {after / before:.2f} | {args.rounds} |")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
