"""The python-socketio baseline: an echo event handler on the polling transport, under uvicorn.

``python -m bench.sio_server --port N [--ping-interval MS]``; the same uvicorn settings as the relay (uvloop, httptools,
no access log).
"""

from __future__ import annotations

import argparse

import socketio  # type: ignore[import-untyped]
import uvicorn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ping-interval", type=int, default=25_000, help="engine.io ping interval, ms")
    args = ap.parse_args()
    sio = socketio.AsyncServer(async_mode="asgi", transports=["polling"], logger=False, engineio_logger=False,
                               ping_interval=args.ping_interval / 1000)

    @sio.on("echo")  # type: ignore[untyped-decorator,unused-ignore]
    async def echo(sid: str, data: str) -> None:
        await sio.emit("echo", data, to=sid)

    app = socketio.ASGIApp(sio)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
