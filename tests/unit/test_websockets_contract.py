"""The websockets internals the relay's upstream leans on for speed (bench/PERF_LEDGER.md), asserted
for the installed release, and the public path it takes when a release lacks one.

``relay_node/sockets/upstream.py`` looks them up once at import (``QUEUED_WRITES``,
``CLOSABLE_PARSER``, ``TRIMMABLE_RESPONSE``, ``OWN_FRAMES``). pyproject bounds ``websockets`` below the
next major: before raising that bound, run this module against the new release. A failure here
says which trick to revisit; the relay itself stays correct on the fallback, which the second half
of this module forces and runs against a real ``websockets`` server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from relay_node.sockets import upstream
from tests.support.ports import free_port


def opened_pair() -> tuple[ClientProtocol, ServerProtocol, Response]:
    """A client and a server protocol after the opening handshake, bytes passed by hand."""
    client, server = ClientProtocol(parse_uri("ws://localhost/")), ServerProtocol()
    client.send_request(client.connect())
    for data in client.data_to_send():
        server.receive_data(data)
    request = server.events_received()[0]
    server.send_response(server.accept(request))  # type: ignore[arg-type]
    for data in server.data_to_send():
        client.receive_data(data)
    [response] = client.events_received()
    assert isinstance(response, Response) and client.state is State.OPEN
    return client, server, response


def to_client(server: ServerProtocol, client: ClientProtocol) -> list[object]:
    for data in server.data_to_send():
        if data:
            client.receive_data(data)
    return list(client.events_received())


# --- the internals, as the relay assumes them -----------------------------------------------------

def test_the_installed_release_has_every_internal_the_relay_uses() -> None:
    """The import-time probe found them all: the relay runs its fast paths, not the fallback."""
    assert upstream.QUEUED_WRITES and upstream.CLOSABLE_PARSER and upstream.TRIMMABLE_RESPONSE
    assert upstream.OWN_FRAMES and upstream.apply_mask is not None
    assert upstream.DIRECT_FRAMES


def test_writes_is_the_list_data_to_send_drains_and_most_reads_owe_nothing() -> None:
    """``no-empty-flush`` reads ``proto.writes`` instead of calling ``data_to_send()`` per read;
    ``own-client-frame`` writes past the protocol only while it is empty."""
    client, server, _ = opened_pair()
    assert client.writes == [] and client.extensions == [] and client.debug is False
    server.send_text(b"hello")
    events = to_client(server, client)
    assert isinstance(events[0], Frame) and events[0].opcode is Opcode.TEXT
    assert client.writes == []  # a data frame owes the target nothing
    server.send_ping(b"p")
    to_client(server, client)
    queued = list(client.writes)
    assert queued, "a ping queues its pong in writes"
    client.send_text(b"x")
    assert len(client.writes) == 2  # send_* appends there too
    drained = client.data_to_send()
    assert drained[0] == queued[0] and client.writes == []  # drained, in order, and emptied


def test_a_closed_parser_lets_the_protocol_go_without_the_cycle_collector() -> None:
    """``parser-close``: the parser generator's frame holds the protocol (a cycle); closing it is
    what lets a closed connection go by refcount. Without the close it stays for ``gc.collect``
    (if that half fails, websockets broke the cycle itself and the trick can go)."""
    alive: dict[bool, bool] = {}
    gc.collect()
    gc.disable()
    try:
        for close in (False, True):
            client, server, response = opened_pair()
            server.send_close(1000, "bye")
            to_client(server, client)
            client.data_to_send()
            client.receive_eof()
            assert client.state is State.CLOSED
            if close:
                client.parser.close()
            ref = weakref.ref(client)
            del client, server, response
            alive[close] = ref() is not None
    finally:
        gc.enable()
    assert alive == {False: True, True: False}, alive


def test_a_connection_cut_by_eof_is_held_by_parser_exc_until_release_parser() -> None:
    """``parser-close`` on a connection cut without a closing handshake: ``parse()`` ends with
    ``parser_exc`` (EOFError), whose traceback holds its frame and so the protocol; closing the
    parser (by then ``discard()``) leaves that cycle, ``release_parser`` breaks it and keeps the
    exception. (If the first half fails, websockets stopped keeping the traceback.)"""
    alive: dict[str, bool] = {}
    gc.collect()
    gc.disable()
    try:
        for how in ("parser.close", "release_parser"):
            client, server, response = opened_pair()
            client.receive_eof()  # the target went away: no close frame
            assert client.state is State.CLOSED and isinstance(client.parser_exc, EOFError)
            if how == "parser.close":
                client.parser.close()
            else:
                upstream.release_parser(client)
                assert isinstance(client.parser_exc, EOFError)  # what ConnectionClosed chains stays
            ref = weakref.ref(client)
            del client, server, response
            alive[how] = ref() is not None
    finally:
        gc.enable()
    assert alive == {"parser.close": True, "release_parser": False}, alive


def test_the_parser_keeps_the_handshake_answer_the_relay_empties() -> None:
    """``drop-handshake-answer``: the ``Response`` event is the object the parser's frame keeps
    for the connection's life, so emptying the event empties what is kept."""
    client, _, response = opened_pair()
    frame = client.parser.gi_frame
    assert frame is not None
    kept = [v for v in frame.f_locals.values() if isinstance(v, Response)]
    assert len(kept) == 1 and kept[0] is response and len(response.headers) > 0
    response.headers.clear()
    response.body = b""
    assert not kept[0].headers and kept[0].body == b""


@pytest.mark.parametrize("size", [0, 5, 4096])
def test_apply_mask_xors_with_the_key(size: int) -> None:
    """``own-client-frame`` masks with websockets' ``apply_mask`` (C or Python)."""
    assert upstream.apply_mask is not None
    data, key = bytes(range(256)) * (size // 256) + bytes(range(size % 256)), b"\x01\x80\xfe\x33"
    assert upstream.apply_mask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))


# --- the probe sees a release that lacks them -----------------------------------------------------

def test_the_probe_sees_a_protocol_without_writes_or_a_closable_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed(ClientProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.outgoing = self.__dict__.pop("writes")
            self.parser.close()
            self.parser = iter(())  # type: ignore[assignment]

    monkeypatch.setattr(upstream, "ClientProtocol", Renamed)
    assert upstream._probe() == (False, False)


def test_the_probe_sees_a_handshake_answer_that_cannot_be_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class FrozenResponse:
        status_code: int
        reason_phrase: str
        headers: Any
        body: bytes = b""

    monkeypatch.setattr(upstream, "Response", FrozenResponse)
    assert upstream._trimmable_response() is False


# --- the fallback, forced, against a real websockets server ---------------------------------------

class Sink:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.lost = asyncio.Event()

    def upstream_message(self, data: str | bytes) -> bool:
        self.messages.append(data)
        return False

    def upstream_lost(self) -> None:
        self.lost.set()


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    port = free_port()

    async def echo(conn: ServerConnection) -> None:
        async for msg in conn:
            await conn.send(msg)
            if msg == "ping me":
                await asyncio.wait_for(await conn.ping(), 5)  # the relay's pong must be written
                await conn.send("ponged")

    async with serve(echo, "127.0.0.1", port, compression=None, ping_interval=None):
        yield f"ws://127.0.0.1:{port}/"


FALLBACKS = ["QUEUED_WRITES", "OWN_FRAMES", "CLOSABLE_PARSER", "TRIMMABLE_RESPONSE", "DIRECT_FRAMES"]


@pytest.fixture(params=[[], *([f] for f in FALLBACKS), FALLBACKS], ids=lambda f: "+".join(f) or "fast")
def forced_off(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The relay as on a websockets release without these internals (empty: the fast paths)."""
    off: list[str] = request.param
    for name in off:
        monkeypatch.setattr(upstream, name, False)
    if "QUEUED_WRITES" in off:
        monkeypatch.setattr(upstream, "OWN_FRAMES", False)  # as the probe derives them
        monkeypatch.setattr(upstream, "DIRECT_FRAMES", False)
    if not upstream.OWN_FRAMES:
        def no_own_frames(data: bytes, text: bool) -> bytes:
            raise AssertionError("the relay framed a message itself with OWN_FRAMES off")
        monkeypatch.setattr(upstream, "client_frame", no_own_frames)
    yield off


async def test_the_upstream_relays_pongs_and_closes_on_either_path(echo_url: str, forced_off: list[str]) -> None:
    up = await upstream.open_upstream(echo_url, host=None, subprotocols=[], origin=None, user_agent="t",
                                      max_size=1 << 20, open_timeout=5, close_timeout=2)
    frame = up.proto.parser.gi_frame
    assert frame is not None
    kept = frame.f_locals["response"]  # the handshake's answer, kept by the parser (emptied or not)
    assert (len(kept.headers) > 0) == ("TRIMMABLE_RESPONSE" in forced_off)
    del frame, kept
    sink = Sink()
    up.attach(sink, 0.0, None)
    assert up.send(b"hello", True) and up.send(b"\x00\xff", False) and up.send(b"ping me", True)
    async with asyncio.timeout(5):
        while len(sink.messages) < 4:
            await asyncio.sleep(0.01)
    assert sink.messages == ["hello", b"\x00\xff", "ping me", "ponged"]  # the pong went out: the ping returned
    up.close(1000, "bye")
    async with asyncio.timeout(5):
        await sink.lost.wait()
    proto = up.proto
    assert proto.state is State.CLOSED and proto.close_rcvd is not None and proto.close_rcvd.code == 1000
    # closed (its frame released) unless forced off; then left for the cycle collector
    assert (proto.parser.gi_frame is None) == ("CLOSABLE_PARSER" not in forced_off)
