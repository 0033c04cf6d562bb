"""Loopback ports for servers a test starts. One ``free_port`` for the whole repository: the one
``polysocket dev`` uses (polysocket_cli/processes.py), re-exported here so tests import ports from one place."""

from __future__ import annotations

import random
import socket

from polysocket_cli.processes import free_port

__all__ = ["free_port", "free_port_block", "low_free_port"]


def free_port_block(n: int) -> int:
    """A base port such that base .. base+n-1 are all free right now."""
    for _ in range(50):
        base = free_port()
        if base + n >= 65536:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def low_free_port() -> int:
    """A free port below the ephemeral range (32768): for a server that other processes' outgoing
    connections must not collide with (a proxy that several tests start and stop)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")
