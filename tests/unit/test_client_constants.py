"""The browser client's constants that the relay must agree with are tied to polysocket_core here.

They are declared once, in client/src/relay-constants.json; client/build.js writes them into
client/polysocket.js (tests/stack/test_es3.py fails when the committed file is stale). This test reads the
values back from the delivered file, so a hand edit of either file or a change on the relay side
that the client does not follow fails here rather than in a browser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from polysocket_core import wire
from polysocket_core.sequencing import InboundSequencer
from relay_node.settings import RelayConfig
from relay_node.sockets.pressure import MIN_SHARE

CLIENT = Path(__file__).resolve().parents[2] / "client"
DECLARED: dict[str, int] = {k: v for k, v in json.loads((CLIENT / "src" / "relay-constants.json").read_text()).items()
                            if not k.startswith("_")}


def _built() -> dict[str, int]:
    """The shared constants as the delivered polysocket.js declares them."""
    source = (CLIENT / "polysocket.js").read_text()
    found = {name: int(value) for name, value in re.findall(r"^    var ([A-Z_]+) = (\d+);$", source, re.M)}
    return {name: found[name] for name in DECLARED if name in found}


def test_the_built_client_declares_every_shared_constant_as_declared() -> None:
    assert _built() == DECLARED


def test_close_codes_are_the_wire_codes() -> None:
    assert DECLARED["CLOSE_GOING_AWAY"] == wire.CLOSE_GOING_AWAY
    assert DECLARED["CLOSE_NO_STATUS"] == wire.CLOSE_NO_STATUS
    assert DECLARED["CLOSE_ABNORMAL"] == wire.CLOSE_ABNORMAL


def test_poll_wait_is_the_relays_default_and_within_its_limit() -> None:
    assert DECLARED["DEFAULT_POLL_TTL_MS"] == wire.DEFAULT_POLL_TTL_MS
    assert DECLARED["DEFAULT_POLL_TTL_MS"] <= wire.MAX_POLL_TTL_MS


def test_idle_fallback_is_the_relays_default_idle_timeout() -> None:
    """Used when a connect answer does not say the node's idle timeout (older nodes)."""
    assert DECLARED["DEFAULT_IDLE_MS"] == round(RelayConfig().idle_timeout_s * 1000)


def test_sends_in_flight_stay_within_what_the_relay_holds_ahead() -> None:
    """The relay refuses a seq this far ahead of a missing one; a batch carries at most this many frames."""
    max_ahead = InboundSequencer(max_message=1).max_ahead
    assert 0 < DECLARED["MAX_SEQ_SPAN"] < max_ahead
    assert DECLARED["MAX_SEQ_SPAN"] <= wire.MAX_BATCH_FRAMES


def test_client_default_batch_fits_a_relay_batch() -> None:
    source = (CLIENT / "polysocket.js").read_text()
    match = re.search(r"maxBatch: (\d+),", source)
    assert match is not None
    assert int(match.group(1)) <= wire.MAX_BATCH_FRAMES


def test_the_relays_least_share_of_its_buffer_budget_is_twice_what_a_stream_delivers_before_its_ack() -> None:
    """Under the relay's buffer budget a socket parks at its share (``relay_node.sockets.pressure``);
    a streaming client acknowledges only when it renews its stream, after STREAM_ACK_CHARS of messages,
    so a smaller share would park a client that keeps up until its stream ends."""
    [chars] = re.findall(r"^    var STREAM_ACK_CHARS = (\d+);", (CLIENT / "polysocket.js").read_text(), re.M)
    assert 2 * int(chars) <= MIN_SHARE
