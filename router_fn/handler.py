"""AWS Lambda entry point: the router behind API Gateway (HTTP API v2, REST API v1) or an ALB.

Import does no I/O: the Redis client is created on the first request and reused by warm
invocations (Mangum runs every invocation on the same event loop).
"""

from __future__ import annotations

from mangum import Mangum

from .app import create_app

app = create_app()
handler = Mangum(app, lifespan="off")
