"""Router settings from ``POLYSOCKET_*`` environment variables (the only configuration a Lambda has)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .ratelimit import Rate
from .ssrf import IPNetwork, parse_cidrs


@dataclass(frozen=True)
class RouterSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ps:"
    ack_timeout_s: float = 2.0  # a node that has not taken the request by then is skipped (once)
    establish_timeout_s: float = 15.0  # total budget for the node to open the upstream WebSocket
    static_dir: str = ""  # serve the browser client under /client/ (polysocket dev)
    admission: str = "tokens"  # "tokens", or "open" (no checks at all: loopback experiments only)
    allow_target_cidrs: list[IPNetwork] = field(default_factory=list)  # private ranges allowed as targets
    rate_per_ip: Rate = field(default_factory=lambda: Rate(120, 60))
    rate_per_token: Rate = field(default_factory=lambda: Rate(6000, 60))

    @classmethod
    def from_env(cls) -> RouterSettings:
        env = os.environ
        d = cls()
        admission = env.get("POLYSOCKET_ADMISSION", d.admission)
        if admission not in ("tokens", "open"):
            raise ValueError(f"POLYSOCKET_ADMISSION must be 'tokens' or 'open', not {admission!r}")
        return cls(
            redis_url=env.get("POLYSOCKET_REDIS_URL", d.redis_url),
            key_prefix=env.get("POLYSOCKET_KEY_PREFIX", d.key_prefix),
            ack_timeout_s=float(env.get("POLYSOCKET_ACK_TIMEOUT", d.ack_timeout_s)),
            establish_timeout_s=float(env.get("POLYSOCKET_ESTABLISH_TIMEOUT", d.establish_timeout_s)),
            static_dir=env.get("POLYSOCKET_STATIC_DIR", d.static_dir),
            admission=admission,
            allow_target_cidrs=parse_cidrs(env.get("POLYSOCKET_ALLOW_TARGET_CIDRS", "")),
            rate_per_ip=Rate.parse(env["POLYSOCKET_RATE_PER_IP"]) if env.get("POLYSOCKET_RATE_PER_IP")
            else d.rate_per_ip,
            rate_per_token=Rate.parse(env["POLYSOCKET_RATE_PER_TOKEN"]) if env.get("POLYSOCKET_RATE_PER_TOKEN")
            else d.rate_per_token,
        )
