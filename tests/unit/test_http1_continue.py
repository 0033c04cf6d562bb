"""``100 Continue`` only when the request is next to be answered (issue 21, D5), over the transport
double of tests/test_http1.py: before, a pipelined request with ``Expect: 100-continue`` got it at
once, even while another answer was in progress; behind an open stream it landed inside the
chunked body and broke its framing."""

from __future__ import annotations

from tests.support.http1 import GET, STREAM_REQ, Streams, body_after_head, make, settle

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EXPECTING = (b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
             b"Expect: 100-continue\r\n\r\n")


async def test_behind_an_open_stream_100_continue_waits_for_its_terminal_chunk() -> None:
    ans = Streams()
    proto, tr, _, _ = make(ans)
    proto.data_received(STREAM_REQ)
    await settle()
    sink = ans.streams[0].sink
    assert sink is not None
    proto.data_received(EXPECTING)  # headers only: the client waits for 100 Continue
    await settle()
    assert CONTINUE not in tr.buffer  # not inside the chunked body
    sink.write_chunk(b"id: 0\ndata: {}\n\n")
    assert body_after_head(tr) == b"5\r\n:ok\n\n\r\n10\r\nid: 0\ndata: {}\n\n\r\n"  # framing intact
    sink.end_stream()
    await settle()
    assert tr.buffer.endswith(b"0\r\n\r\n" + CONTINUE)  # its turn: right after the terminal chunk
    proto.data_received(b"hello")
    await settle()
    assert tr.statuses() == [200, 100, 200]


async def test_behind_queued_answers_100_continue_comes_after_them() -> None:
    proto, tr, ans, _ = make()
    ans.hold()
    proto.data_received(GET + GET + EXPECTING)
    await settle()
    assert tr.buffer == b""  # the first answer is still in progress: nothing, 100 Continue included
    ans.release()
    await settle()
    assert tr.statuses() == [200, 200, 100] and tr.buffer.endswith(CONTINUE)
    proto.data_received(b"hello")
    await settle()
    assert tr.statuses() == [200, 200, 100, 200] and ans.calls[-1][3] == b"hello"


async def test_a_client_that_sends_the_body_without_waiting_gets_no_late_100_continue() -> None:
    proto, tr, ans, _ = make()
    ans.hold()
    proto.data_received(GET + EXPECTING + b"hello")  # complete before its turn came
    await settle()
    ans.release()
    await settle()
    assert tr.statuses() == [200, 200] and CONTINUE not in tr.buffer


async def test_on_an_idle_connection_100_continue_is_written_at_once() -> None:
    proto, tr, _, _ = make()
    proto.data_received(EXPECTING)
    assert tr.buffer == CONTINUE
