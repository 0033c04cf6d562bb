"""Which of the relay's hot modules run compiled by mypyc, declared once.

The relay image compiles these modules (``scripts/compile_relay.py``, the Dockerfile's build
stage): the relay's Python per round trip drops by 40 %, its CPU per message by 12-20 % end to end
(``bench/results/relay-alone.md``, row ``mypyc-hot-path`` of ``bench/PERF_LEDGER.md``). The
router's Lambda zip and a plain ``pip install`` keep them interpreted; ``make test`` runs the suite
against both builds. The relay logs at start which build it runs, so an image built without the
compiler is seen, not guessed.
"""

from __future__ import annotations

import importlib.machinery
import sys

# The modules a message passes through on the relay, in import order. Anything else on the relay
# (control plane, AWS, metrics, settings) runs rarely and stays interpreted.
HOT_MODULES: tuple[str, ...] = (  # perf: mypyc-hot-path
    "polysocket_core.wire",
    "polysocket_core.sequencing",
    "polysocket_core.sse",
    "polysocket_core.edge",
    "relay_node.sockets.deadlines",
    "relay_node.sockets.pressure",
    "relay_node.sockets.receivers",
    "relay_node.sockets.stream",
    "relay_node.sockets.upstream",
    "relay_node.sockets.socket",
    "relay_node.sockets.table",
    "relay_node.edge.http1",
    "relay_node.edge.endpoints",
)


def is_compiled(module: str) -> bool:
    """Whether an imported module was loaded from an extension (mypyc's output), not from source."""
    path = getattr(sys.modules.get(module), "__file__", None) or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def build_summary() -> str:
    """One phrase for the start log: all compiled, none, or which are not (a partial build is a fault)."""
    loaded = [name for name in HOT_MODULES if name in sys.modules]
    interpreted = [name for name in loaded if not is_compiled(name)]
    if not interpreted:
        return f"compiled by mypyc ({len(loaded)} hot modules)"
    if len(interpreted) == len(loaded):
        return "interpreted (no mypyc build)"
    return "partly compiled; interpreted: " + ", ".join(interpreted)
