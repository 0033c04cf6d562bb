"""``direct-frames``: the relay reads the common upstream frame itself (bench/PERF_LEDGER.md).

What it must keep true: every message, pong, close and failure is what websockets' own parser
gives, in the same order, whatever the frames and however TCP splits them; and the parser is
left exactly where it would be (between frames, its buffer empty) whenever the relay reads a frame
past it. The frames come from websockets' real ``ServerProtocol``; only the transport is a byte
recorder (the tests choose where reads split, which real sockets would not let them do).
"""

from __future__ import annotations

import random

import pytest
from websockets.client import ClientProtocol
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from relay_node.sockets import upstream

LIMITS = (1000, 70_000)  # the client's max_size: under 64 KiB, and one all three length encodings fit in


class Recorder:
    """The upstream's transport: keeps what the relay writes to the target."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def upstream_message(self, data: str | bytes) -> bool:
        self.messages.append(data)
        return False

    def upstream_lost(self) -> None: ...


def handshake() -> tuple[upstream.Upstream, ServerProtocol, Recorder]:
    """An upstream in CONNECTING with its request read by a real server protocol."""
    client = ClientProtocol(parse_uri("ws://localhost/"), max_size=1000)
    up = upstream.Upstream(client, close_timeout=5)
    transport = Recorder()
    up.connection_made(transport)  # type: ignore[arg-type]
    client.send_request(client.connect())
    server = ServerProtocol()
    for data in client.data_to_send():
        server.receive_data(data)
    server.send_response(server.accept(server.events_received()[0]))  # type: ignore[arg-type]
    return up, server, transport


def server_frames(rng: random.Random, limit: int) -> list[bytes]:
    """A random run of what a target may send: messages of every size class, fragments, pings,
    pongs, invalid UTF-8, and sometimes a message over the limit or a close at the end."""
    server = ServerProtocol()
    server.state = State.OPEN
    for _ in range(rng.randrange(1, 12)):
        kind = rng.randrange(9)
        if kind <= 2:
            server.send_text(("é" * rng.choice((0, 1, 20, 62, 100, 400))).encode())
        elif kind == 3:
            server.send_binary(rng.randbytes(rng.choice((0, 3, 125, 126, 700, 65_535, 65_536, 70_000))))
        elif kind == 4:
            server.send_text(b"frag", fin=False)
            if rng.random() < 0.5:
                server.send_ping(b"between")
            server.send_continuation(b"ment", fin=False)
            server.send_continuation(b"ed", fin=True)
        elif kind == 5:
            server.send_ping(rng.randbytes(rng.randrange(10)))
        elif kind == 6:
            server.send_pong(b"")
        elif kind == 7 and rng.random() < 0.3:
            server.send_text(b"\xff\xfe not utf-8")
        elif kind == 8 and rng.random() < 0.3:
            server.send_binary(b"z" * rng.choice((limit + 1, 1 << 17)))  # over the client's max_size: 1009
    if rng.random() < 0.2:
        server.send_close(CloseCode.NORMAL_CLOSURE, "bye")
    return [d for d in server.data_to_send() if d]


def split(frames: list[bytes], rng: random.Random) -> list[bytes]:
    """The frames' bytes in reads cut anywhere (in a header, in a payload) and between frames."""
    data = b"".join(frames)
    bounds = [sum(map(len, frames[:i])) for i in range(1, len(frames))]
    anywhere = rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 4))) if len(data) > 1 else []
    cuts = sorted({*anywhere, *(b for b in bounds if rng.random() < 0.6)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def where(frames: list[bytes], at: int) -> tuple[int, bytes]:
    """Where the relay must know the parser stands after ``at`` bytes: (bytes owed to the frame
    it is in, the start of a header not yet whole)."""
    start = 0
    for frame in frames:
        end = start + len(frame)
        if at < end:
            size = frame[1] & 0x7F
            header = 2 + {126: 2, 127: 8}.get(size, 0) + (4 if frame[1] & 0x80 else 0)
            return (0, frame[:at - start]) if at - start < header else (end - at, b"")
        start = end
    return 0, b""


def run(frames: list[bytes], chunks: list[bytes], limit: int, direct: bool,
        monkeypatch: pytest.MonkeyPatch) -> tuple[object, ...]:
    """Feed ``chunks`` (the ``frames`` split) to an open upstream; what the sink and the target saw."""
    monkeypatch.setattr(upstream, "DIRECT_FRAMES", direct)
    client = ClientProtocol(parse_uri("ws://localhost/"), state=State.OPEN, max_size=limit)
    up = upstream.Upstream(client, close_timeout=5)
    transport = Recorder()
    up.connection_made(transport)  # type: ignore[arg-type]
    sink = Sink()
    up.attach(sink, 0.0, None)
    parsed = 0
    receive = client.receive_data

    def counted(data: bytes) -> None:
        nonlocal parsed
        parsed += 1
        receive(data)

    client.receive_data = counted  # type: ignore[method-assign]
    fed = 0
    for chunk in chunks:
        up.data_received(chunk)
        fed += len(chunk)
        if client.state is State.OPEN:  # the relay knows where the parser stands (after a failure: moot)
            assert (up._need, up._head) == where(frames, fed)
            if up._need == 0 and not up._head:
                assert not client.reader.buffer
    # pongs are masked with fresh keys: compare what the target would read
    server = ServerProtocol()
    server.state = State.OPEN
    for data in transport.written:
        server.receive_data(data)
    seen = [(type(e).__name__, getattr(e, "opcode", None), getattr(e, "data", None)) for e in server.events_received()]
    return sink.messages, seen, client.state, client.close_sent, transport.closed, parsed, len(chunks)


async def test_the_relay_reads_what_websockets_parser_reads_however_the_frames_split(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20)
    used = 0
    for i in range(400):
        limit = LIMITS[i % 2]
        frames = server_frames(rng, limit)
        chunks = split(frames, rng)
        *direct, parsed, reads = run(frames, chunks, limit, True, monkeypatch)
        *plain, _, _ = run(frames, chunks, limit, False, monkeypatch)
        assert direct == plain
        used += reads - parsed
    assert used > 200  # the direct path did read most of the common frames


async def test_the_common_frame_passes_the_parser_by(monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerProtocol()
    server.state = State.OPEN
    server.send_text(b"hello")
    server.send_binary(b"\x00" * 300)  # a 16-bit length
    frames = server.data_to_send()
    *got, parsed, reads = run(frames, [b"".join(frames)], 1000, True, monkeypatch)
    assert got[0] == ["hello", b"\x00" * 300] and parsed == 0 and reads == 1


async def test_frames_in_the_handshakes_read_are_followed_and_the_next_read_is_direct() -> None:
    up, server, _ = handshake()
    sink = Sink()
    server.send_text(b"first")  # arrives in the same read as the 101
    up.data_received(b"".join(server.data_to_send()))
    assert up.proto.state is State.OPEN and up._need == 0 and not up._head
    up.attach(sink, 0.0, None)
    server.send_text(b"second")
    up.data_received(b"".join(server.data_to_send()))
    assert sink.messages == ["first", "second"]


async def test_a_handshake_answer_split_across_reads_leaves_the_parser_in_charge() -> None:
    up, server, _ = handshake()
    server.send_text(b"first")
    data = b"".join(server.data_to_send())
    up.data_received(data[:20])
    up.data_received(data[20:])
    assert up.proto.state is State.OPEN and up._need == -1  # where the frames start is not known
    sink = Sink()
    up.attach(sink, 0.0, None)
    server.send_text(b"second")
    up.data_received(b"".join(server.data_to_send()))
    assert sink.messages == ["first", "second"]
