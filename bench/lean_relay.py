"""``polysocket relay`` as it runs once ``relay_node/server.py`` takes the two changes proposed in issue 4.

1. ``run_relay`` selects the relay's own HTTP protocol, ``uvicorn.Config(http="relay_node.http:RelayHTTPProtocol")``,
   instead of ``http="httptools"`` (the whole test suite passes with it).
2. The relay raises the young-generation GC threshold (``gc.set_threshold(20_000, 10, 10)``): with
   hundreds of sockets the default 700 runs a collection every few requests over thousands of
   live futures, tasks and connections; at 1,000 sessions that was a third of the relay's CPU.

Until then the bench runs this shim as the ``polysocket-lean`` system: the same CLI and relay, with
those two settings applied in this process only. ``BENCH_GC_GEN0`` overrides the threshold.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import uvicorn

LEAN = "relay_node.http:RelayHTTPProtocol"
GC_GEN0 = 20_000


def main() -> int:
    gc.set_threshold(int(os.environ.get("BENCH_GC_GEN0") or GC_GEN0), *gc.get_threshold()[1:])
    original = uvicorn.Config.__init__

    def init(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("http") == "httptools":
            kwargs["http"] = LEAN
        original(self, *args, **kwargs)

    uvicorn.Config.__init__ = init  # type: ignore[method-assign]
    from polysocket_cli.main import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
