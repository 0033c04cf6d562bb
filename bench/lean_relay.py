"""``polysocket relay`` with the relay's own HTTP protocol (``relay_node.http.RelayHTTPProtocol``).

Until ``relay_node/server.py`` selects that protocol itself (a one-line change: ``http=`` in
``run_relay``), the bench runs this shim as the ``polysocket-lean`` system: the same CLI, the same
relay, with ``uvicorn.Config(http="httptools")`` swapped for the lean protocol in this process only.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

LEAN = "relay_node.http:RelayHTTPProtocol"


def main() -> int:
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
