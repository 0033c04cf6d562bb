"""AWS Lambda entry point: the router behind API Gateway (HTTP API v2, REST API v1) or an ALB.

Import does no I/O: the Redis client is created on the first request and reused by warm
invocations (Mangum runs every invocation on the same event loop).

What the import holds depends on how the function starts. On demand, only what ``/connect`` needs:
FastAPI (``router_fn.rest``: the library files, refusals) is built by the first request that needs
it, so a cold start does not pay for it. Under SnapStart the import runs once, before the snapshot
every cold start restores (with provisioned concurrency, before any request arrives), so it builds
that app too: no request then waits for an import.
"""

from __future__ import annotations

import os

from mangum import Mangum

from .app import create_app

# How Lambda is initialising this instance: "on-demand" (a request is waiting), "snap-start" (the
# snapshot is taken after this phase) or "provisioned-concurrency" (ahead of the traffic).
INITIALIZED_AHEAD = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") in ("snap-start", "provisioned-concurrency")

app = create_app()
if INITIALIZED_AHEAD:
    app.preload()
handler = Mangum(app, lifespan="off")
