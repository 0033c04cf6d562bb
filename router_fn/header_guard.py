"""A request-head deadline for the router's HTTP/1.1 server (D7: slow and silent clients).

uvicorn's protocols arm no timer when a connection opens, and every chunk received cancels the
keep-alive timer, which is only re-armed after a response: a client that connects and says
nothing, or trickles a header byte now and then, holds its connection (and a file descriptor)
forever. httptools also puts no bound on the size of a request head.

``guard_http_protocol(inner)`` wraps any ``asyncio.Protocol`` class (uvicorn's
``HttpToolsProtocol`` or ``H11Protocol``) by composition, without touching its internals, and
adds what Go calls ``ReadHeaderTimeout`` and nginx ``client_header_timeout``:

* from the moment a connection opens, and from the first byte of every later request, the whole
  request head (up to the blank line) must arrive within ``header_timeout_s``, however it is
  trickled; else the connection is closed;
* a head larger than ``max_head_bytes`` is answered ``431 payload_too_large`` (the relay's answer
  to headers over its limit, from the same ``polysocket_core.edge.closing_refusal``) and the
  connection closed.

Between the end of a head and the first byte of the next request nothing is timed here: the app
is working (a ``/connect`` may take the whole establish budget), then uvicorn's own
``timeout_keep_alive`` closes an idle keep-alive connection. The router takes no request bodies,
so bytes after a head are simply the next head; a body sent anyway only counts against the
deadline and the size bound of the next request, which is harmless.

It imports nothing from uvicorn (the Lambda package does not ship it). Wire it as::

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from router_fn.header_guard import guard_http_protocol
    uvicorn.run(app, http=guard_http_protocol(HttpToolsProtocol, header_timeout_s=10.0), ...)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from polysocket_core.edge import closing_refusal

log = logging.getLogger("polysocket.router")

HEAD_END = b"\r\n\r\n"


class _HeadGuard(asyncio.Protocol):
    inner_class: type[asyncio.Protocol]
    header_timeout_s: float
    max_head_bytes: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = self.inner_class(*args, **kwargs)
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.in_head = True  # waiting for (the rest of) a request head
        self.head_bytes = 0
        self.tail = b""  # the last 3 bytes seen, for a blank line split across chunks

    # -- the deadline -------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            log.info("closing a connection whose request head took over %gs", self.header_timeout_s)
            self.transport.close()

    def _track(self, data: bytes) -> bool:
        """Follow head boundaries in ``data``; False if the connection was closed for a huge head
        (one still arriving, or complete in this read: then nothing of this read reaches the app)."""
        if self.transport is None or self.transport.is_closing():
            return False
        pos = 0
        while pos < len(data):
            if not self.in_head:  # the first byte of the next request starts its deadline
                self.in_head, self.head_bytes, self.tail = True, 0, b""
                self._arm()
            window = self.tail + data[pos:]
            end = window.find(HEAD_END)
            if end < 0:
                self.head_bytes += len(data) - pos
                self.tail = window[-3:]
                break
            consumed = end + len(HEAD_END) - len(self.tail)
            self.head_bytes += consumed
            if self.head_bytes > self.max_head_bytes:
                break
            pos += consumed
            self.in_head, self.tail = False, b""
            self._disarm()
        if self.head_bytes > self.max_head_bytes:
            self._disarm()
            self.transport.write(closing_refusal(431, f"request head over {self.max_head_bytes} bytes"))
            self.transport.close()
            return False
        return True

    # -- asyncio.Protocol, forwarded ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only the same interface.
        self.transport = cast(asyncio.Transport, transport)
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._track(data):
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def __getattr__(self, name: str) -> Any:  # shutdown() and anything else the server calls
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def guard_http_protocol(inner: type[asyncio.Protocol], header_timeout_s: float = 10.0,
                        max_head_bytes: int = 64 * 1024) -> type[asyncio.Protocol]:
    """``inner`` with a request-head deadline and size bound (see the module docstring)."""
    if header_timeout_s <= 0 or max_head_bytes <= 0:
        raise ValueError("header_timeout_s and max_head_bytes must be positive")
    attrs: dict[str, Any] = {"inner_class": inner, "header_timeout_s": header_timeout_s,
                             "max_head_bytes": max_head_bytes, "__module__": __name__}
    alpn = getattr(inner, "alpn_protocols", None)
    if alpn is not None:
        attrs["alpn_protocols"] = alpn
    return type(f"HeadGuarded{inner.__name__}", (_HeadGuard,), attrs)
