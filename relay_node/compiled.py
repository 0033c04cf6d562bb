"""Which of the relay's hot modules run compiled by mypyc, declared once.

The relay image compiles these modules (``scripts/compile_relay.py``, the Dockerfile's build
stage): the relay's Python per round trip drops by 40 %, its CPU per message by 12-20 % end to end
(``bench/results/relay-alone.md``, row ``mypyc-hot-path`` of ``bench/PERF_LEDGER.md``). The
router's Lambda zip and a plain ``pip install`` keep them interpreted; ``make test`` runs the suite
against both builds. The relay logs at start which build it runs, so an image built without the
compiler is seen, not guessed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from collections.abc import Mapping
from types import ModuleType

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


def is_compiled(module: ModuleType) -> bool:
    """Whether a module was loaded from an extension (mypyc's output), not from source."""
    path = getattr(module, "__file__", None) or ""
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def summary(modules: Mapping[str, ModuleType]) -> str:
    """One phrase for the start log from the hot modules as loaded: all compiled, none, or which are
    not (a partial build is a fault)."""
    interpreted = [name for name, module in modules.items() if not is_compiled(module)]
    if not interpreted:
        return f"compiled by mypyc ({len(modules)} hot modules)"
    if len(interpreted) == len(modules):
        return "interpreted (no mypyc build)"
    return "partly compiled; interpreted: " + ", ".join(interpreted)


def build_summary() -> str:
    """:func:`summary` of every hot module, each imported (the relay imports them all anyway)."""
    return summary({name: importlib.import_module(name) for name in HOT_MODULES})
