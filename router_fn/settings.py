"""Router settings from ``POLYSOCKET_*`` environment variables (the only configuration a Lambda has)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RouterSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ps:"
    ack_timeout_s: float = 2.0  # a node that has not taken the request by then is skipped (once)
    establish_timeout_s: float = 15.0  # total budget for the node to open the upstream WebSocket
    static_dir: str = ""  # serve the browser client under /client/ (polysocket dev)

    @classmethod
    def from_env(cls) -> RouterSettings:
        env = os.environ
        return cls(
            redis_url=env.get("POLYSOCKET_REDIS_URL", cls.redis_url),
            key_prefix=env.get("POLYSOCKET_KEY_PREFIX", cls.key_prefix),
            ack_timeout_s=float(env.get("POLYSOCKET_ACK_TIMEOUT", cls.ack_timeout_s)),
            establish_timeout_s=float(env.get("POLYSOCKET_ESTABLISH_TIMEOUT", cls.establish_timeout_s)),
            static_dir=env.get("POLYSOCKET_STATIC_DIR", cls.static_dir),
        )
