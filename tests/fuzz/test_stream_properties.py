"""Stream resume as a property of the pure core: the relay side is exactly what a ``GET /stream``
writes (``sse.next_events`` over the ``OutboundBuffer``, the byte budget, acks on sends), the
client side an EventSource-like parser. Whatever the cut points (mid-event, mid-line, between
events), budgets, acks on sends and resumes (``ack`` or ``Last-Event-ID``), the client processes
every message exactly once and in order, and the relay ends holding nothing acknowledged.
No I/O: ``PSTEST_FAULTS=full`` only raises the number of examples."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polysocket_core import sse
from polysocket_core.sequencing import OutboundBuffer
from polysocket_core.wire import text_fragment
from tests.faults.conftest import current_profile

pytestmark = pytest.mark.faults

PROFILE = current_profile()
fuzz = settings(max_examples=PROFILE.fuzz_examples, deadline=None, database=None, derandomize=not PROFILE.explore,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class EventSourceModel:
    """What a browser does with the body: lines, an event dispatched at its blank line only, the
    last dispatched ``id`` kept across connections (EventSource's ``Last-Event-ID``)."""

    def __init__(self) -> None:
        self.last_event_id = -1
        self._reset()

    def _reset(self) -> None:
        self.pending = b""
        self.id_buffer = -1
        self.data: list[bytes] = []

    def reconnect(self) -> None:
        self._reset()  # whatever part of an event was read is discarded

    def feed(self, body: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        self.pending += body
        while b"\n" in self.pending:
            line, _, self.pending = self.pending.partition(b"\n")
            if not line:
                if self.data:
                    out.append((self.id_buffer, b"\n".join(self.data)))
                    self.last_event_id = self.id_buffer
                self.data = []
            elif line.startswith(b":"):
                continue  # a comment: opening, prelude, heartbeat
            elif line.startswith(b"id: "):
                self.id_buffer = int(line[4:])
            elif line.startswith(b"data: "):
                self.data.append(line[6:])
            else:
                raise AssertionError(f"unexpected line {line!r}")
        return out


steps = st.lists(st.tuples(
    st.integers(0, 4),  # messages the target sends before this step
    st.one_of(st.none(), st.floats(0, 1)),  # None: the client reads all that was written; else cut there
    st.booleans(),  # the client acks what it processed on a send
    st.booleans(),  # a resume uses Last-Event-ID (EventSource) rather than ?ack=
), min_size=1, max_size=40)


@fuzz
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=60), budget=st.integers(1, 400), plan=steps,
       pad=st.booleans())
def test_a_stream_cut_anywhere_resumes_with_every_message_once_in_order(
        sizes: list[int], budget: int, plan: list[tuple[int, float | None, bool, bool]], pad: bool) -> None:
    out = OutboundBuffer()
    sent: list[bytes] = []
    client = EventSourceModel()
    processed: list[int] = []
    last_seq = -1  # the client's highest processed seq: what it puts in ?ack= and on its sends

    def push(n: int) -> None:
        for _ in range(n):
            if len(sent) < len(sizes):
                fragment = text_fragment(out.next_seq, "x" * sizes[len(sent)])
                sent.append(fragment)
                out.push(fragment)

    def process(events: list[tuple[int, bytes]]) -> None:
        nonlocal last_seq
        for seq, data in events:
            assert data == sent[seq]  # an event is the poll fragment of its seq, intact
            if seq > last_seq:  # seqs already processed are dropped
                processed.append(seq)
                last_seq = seq

    # One stream per loop turn at most: it writes as messages arrive until its budget is spent
    # or the connection is cut; then the client resumes.
    cursor, written, alive = -1, 0, False
    turns = [*plan, *[(len(sizes), None, True, False)] * (len(sizes) + 2)]  # then read to the end
    for arrive, cut, ack_on_send, use_last_event_id in turns:
        if not alive:  # (re)connect: the effective ack is applied before anything is written
            client.reconnect()
            ack = client.last_event_id if use_last_event_id else last_seq
            out.ack(max(ack, -1))
            cursor, written, alive = -1, 0, True
            process(client.feed(sse.opening(pad)))
        push(arrive)
        data, cursor = sse.next_events(out, cursor, budget - written)
        written += len(data)
        if cut is not None:
            data = data[:int(len(data) * cut)]
            alive = False
        process(client.feed(data))
        if written > budget:
            alive = False  # the terminal chunk: the client resumes
        if ack_on_send:
            out.ack(last_seq)
    assert len(sent) == len(sizes)
    assert processed == list(range(len(sizes)))
    out.ack(last_seq)
    assert len(out) == 0 and out.unacked_bytes == 0


@fuzz
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=30), budget=st.integers(0, 2000))
def test_one_write_ends_right_after_the_event_that_crosses_the_budget(sizes: list[int], budget: int) -> None:
    out = OutboundBuffer()
    for n in sizes:
        out.push(text_fragment(out.next_seq, "y" * n))
    data, cursor = sse.next_events(out, -1, budget)
    events = [e + b"\n\n" for e in data.split(b"\n\n") if e]
    assert len(events) == cursor + 1 >= 1
    assert sum(map(len, events[:-1])) <= budget  # every event before the last fit
    assert sum(map(len, events)) > budget or cursor == len(sizes) - 1  # the last crossed it, or all fit
