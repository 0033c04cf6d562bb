"""Router settings, declared once: each field is a ``--flag`` of ``polysocket router`` and a
``POLYSOCKET_*`` variable (the only configuration a Lambda has). Pure: importing it does no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from polysocket_core.redis_client import check_tls
from polysocket_core.settings import (
    SettingError,
    key_prefix_setting,
    port,
    positive_int,
    redis_ca_file_setting,
    redis_url_setting,
    resolve,
    seconds,
    setting,
    show_list,
    text,
)

from .ratelimit import Rate
from .ssrf import IPNetwork, parse_cidrs

ADMISSIONS = ("tokens", "open")
# API Gateway cuts every integration at 29 s; serverless.yml gives the Lambda the same timeout.
DEFAULT_REQUEST_TIMEOUT_S = 29.0


@dataclass(frozen=True)
class RouterSettings:
    redis_url: str = redis_url_setting()
    redis_ca_file: str = redis_ca_file_setting()
    key_prefix: str = key_prefix_setting()
    ack_timeout_s: float = setting(2.0, seconds, "a node that has not taken a connect by then is skipped (once)",
                                   name="ack-timeout")
    establish_timeout_s: float = setting(15.0, seconds, "total budget for a node to open the upstream WebSocket",
                                         name="establish-timeout")
    node_timeout_s: float = setting(12.0, seconds, "longest wait for one relay node from the pick (ack + the "
                                    "relay's upstream open); then one other node gets the rest of the budget",
                                    name="node-timeout")
    request_timeout_s: float = setting(DEFAULT_REQUEST_TIMEOUT_S, seconds,
                                       "hard limit on one /connect imposed by the platform (API Gateway: 29 s); "
                                       "the establish budget must fit inside it", name="request-timeout")
    admission: str = setting("tokens", text, "'tokens' checks every connect; 'open' admits anything "
                             "(loopback experiments only)", choices=ADMISSIONS)
    allow_target_cidrs: tuple[IPNetwork, ...] = setting(
        (), lambda raw: tuple(parse_cidrs(raw)),
        "comma-separated CIDRs that targets may resolve to although private (e.g. 127.0.0.0/8)", show=show_list)
    rate_per_ip: Rate = setting(Rate(120, 60), Rate.parse, "connects per client IP, N/SECONDS (0/1: no limit)",
                                show=str)
    rate_per_token: Rate = setting(Rate(6000, 60), Rate.parse, "connects per token, N/SECONDS (0/1: no limit)",
                                   show=str)
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        (), lambda raw: tuple(parse_cidrs(raw)),
        "comma-separated CIDRs of proxies whose X-Forwarded-For entries are believed (none: the peer address; "
        "under Lambda the address AWS saw)", show=show_list)
    static_dir: str = setting("", text, "serve this directory under /client/ (the browser library)")
    host: str = setting("127.0.0.1", text, "address to listen on (not used under Lambda)")
    port: int = setting(8100, port, "port to listen on (not used under Lambda)")
    ssl_certfile: str = setting("", text, "serve HTTPS with this certificate chain (PEM)")
    ssl_keyfile: str = setting("", text, "private key (PEM) of --ssl-certfile")
    header_timeout_s: float = setting(10.0, seconds, "a request's headers must arrive within this long, or the "
                                      "connection is cut (slow clients; not used under Lambda)", name="header-timeout")
    max_head_bytes: int = setting(65536, positive_int, "larger request headers get 431 (not used under Lambda)")
    max_clients: int = setting(1000, positive_int, "most HTTP connections served at once; more get 503 "
                               "(not used under Lambda)")

    def __post_init__(self) -> None:
        if not 0 < self.ack_timeout_s < self.establish_timeout_s < self.request_timeout_s:
            raise SettingError(
                "timeouts must be ordered 0 < --ack-timeout < --establish-timeout < --request-timeout "
                f"(got {self.ack_timeout_s} < {self.establish_timeout_s} < {self.request_timeout_s})")
        if not self.ack_timeout_s < self.node_timeout_s:
            raise SettingError(f"--node-timeout ({self.node_timeout_s:g}) must be above --ack-timeout "
                               f"({self.ack_timeout_s:g})")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise SettingError("--ssl-certfile and --ssl-keyfile go together")
        check_tls(self.redis_url, self.redis_ca_file)  # here too: under Lambda the client is built late

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RouterSettings:
        """The Lambda's way in: only ``POLYSOCKET_*`` variables."""
        return resolve(cls, env)
