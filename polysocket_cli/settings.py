"""Settings of the commands that are not services: ``dev``, ``token``, ``status``, ``echo`` and the global log
level. Declared the same way as the router's and the relay's (``polysocket_core.settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from polysocket_core.settings import (
    SettingError,
    key_prefix_setting,
    port,
    positive_int,
    redis_ca_file_setting,
    redis_url_setting,
    setting,
    text,
)
from router_fn.tokens import check_token_value

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogSettings:
    log_level: str = setting("info", text, "how much to log", choices=LOG_LEVELS)


@dataclass(frozen=True)
class DevSettings:
    redis_url: str = setting("", text, "use this Redis instead of starting an embedded Valkey")
    port: int = setting(8100, port, "router port; relays use the next ports, the echo target the one after")
    relays: int = setting(2, positive_int, "number of relay nodes")
    dev_token: str = setting("", check_token_value, "value of the development token (default: a fresh random one)",
                             secret=True)
    key_prefix: str = key_prefix_setting()

    def __post_init__(self) -> None:
        if self.port + self.relays + 1 > 65535:
            raise SettingError(f"--port {self.port} leaves no room for {self.relays} relays and the echo target")


@dataclass(frozen=True)
class TokenSettings:
    redis_url: str = redis_url_setting()
    redis_ca_file: str = redis_ca_file_setting()
    key_prefix: str = key_prefix_setting()


@dataclass(frozen=True)
class StatusSettings:
    redis_url: str = redis_url_setting()
    redis_ca_file: str = redis_ca_file_setting()
    key_prefix: str = key_prefix_setting()


@dataclass(frozen=True)
class EchoSettings:
    host: str = setting("127.0.0.1", text, "address to listen on")
    port: int = setting(8109, port, "port to listen on")
