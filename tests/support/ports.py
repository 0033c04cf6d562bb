"""Loopback ports for servers a test starts. One ``free_port`` for the whole repository: the one
``polysocket dev`` uses (polysocket_cli/processes.py), re-exported here so tests import ports from one place."""

from __future__ import annotations

import socket

from polysocket_cli.processes import free_port

__all__ = ["free_port", "free_port_block"]


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
