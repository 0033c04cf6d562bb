"""A Valkey cluster of three primaries on loopback, built with CLUSTER commands (no redis-cli)."""

from __future__ import annotations

import time

import redis

from polysocket_cli.processes import Stack, free_port

SLOTS = 16384


def start_valkey_cluster(stack: Stack, primaries: int = 3, timeout_s: float = 20.0) -> list[int]:
    """Start ``primaries`` cluster-enabled Valkeys, split the slots between them, introduce them
    to each other and wait until every node reports ``cluster_state:ok``; their ports."""
    ports: list[int] = []
    bus_ports: list[int] = []
    for i in range(primaries):
        port, bus = free_port(), free_port()
        bus_ports.append(bus)
        stack.start_valkey(port, extra=["--cluster-enabled", "yes", "--cluster-port", str(bus),
                                        "--cluster-config-file", f"nodes-{port}.conf",
                                        "--cluster-node-timeout", "2000", "--dbfilename", f"dump-{i}.rdb"])
        ports.append(port)
    clients = [redis.Redis(port=p) for p in ports]
    try:
        per = SLOTS // primaries
        for i, c in enumerate(clients):
            last = SLOTS - 1 if i == primaries - 1 else (i + 1) * per - 1
            c.cluster("ADDSLOTSRANGE", i * per, last)
        for c in clients[1:]:
            c.cluster("MEET", "127.0.0.1", ports[0], bus_ports[0])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(c.cluster("info")["cluster_state"] == "ok" for c in clients) and all(
                    len(c.cluster("nodes")) == primaries for c in clients):
                return ports
            time.sleep(0.1)
        raise TimeoutError(f"the cluster on {ports} did not converge within {timeout_s}s")
    finally:
        for c in clients:
            c.close()
