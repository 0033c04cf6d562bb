"""One declaration per setting: flags, variables, help and checks all come from it.

Pure tests (no servers) plus the CLI run as a user runs it, for the errors a user sees.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from polysocket_cli.main import COMMANDS, build_parser
from polysocket_cli.processes import REPO_ROOT
from polysocket_core.settings import Declared, SettingError, declared, env_names, resolve, to_argv, to_env
from relay_node.settings import RelayConfig
from router_fn.ratelimit import Rate
from router_fn.settings import RouterSettings

SETTINGS_CLASSES = [command.settings() for command in COMMANDS.values()]
NAMED_IN = ["serverless.yml", "README.md", "infra", "docs", "localstack"]


def named_variables() -> dict[str, str]:
    """Every POLYSOCKET_* a user is told about, with the file that names it."""
    found: dict[str, str] = {}
    for entry in NAMED_IN:
        root = REPO_ROOT / entry
        paths = [root] if root.is_file() else [p for p in root.rglob("*")
                                               if p.is_file() and ".terraform" not in p.parts]
        for path in paths:
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            for name in re.findall(r"POLYSOCKET_[A-Z0-9_]*[A-Z0-9](?:_\*|_(?![A-Za-z0-9]))?", text):
                found.setdefault(name, str(path.relative_to(REPO_ROOT)))
    return found


def test_every_documented_variable_is_a_declared_setting() -> None:
    from polysocket_cli.settings import LogSettings

    known = env_names(*SETTINGS_CLASSES, LogSettings)
    named = named_variables()
    assert len(named) >= 10, named  # the scan finds the files
    def declared_name(name: str) -> bool:  # `POLYSOCKET_ROUTE53_*` in prose (or a `_` prefix in code) names a family
        if name.endswith(("_*", "_")):
            return any(k.startswith(name.rstrip("*")) for k in known)
        return name in known

    unknown = {name: where for name, where in named.items() if not declared_name(name)}
    assert unknown == {}, f"named in deploy files or docs but declared nowhere: {unknown}"


def sample_value(cls: type, d: Any) -> Any:
    """A valid value different from the default, for the round trip."""
    samples: dict[str, Any] = {
        "admission": "open", "log_level": "debug", "allow_target_cidrs": (ipaddress.ip_network("10.0.0.0/8"),),
        "trusted_proxies": (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")),
        "rate_per_ip": Rate(5, 7), "rate_per_token": Rate(9, 11), "ssl_certfile": "", "ssl_keyfile": "",
        "max_poll_ttl_ms": 30_000, "ack_timeout_s": 1.5, "establish_timeout_s": 12.5, "dev_token": "x" * 20,
        "ping_interval_s": None, "fqdn": "n1.relay.example:8443", "node_id": "node-7", "port": 8443,
        "relay_domain": "relay.example:8443", "cert_store": "s3", "redis_url": "rediss://h:6380/0",
        "buffer_budget_bytes": 256 << 20,
    }
    if d.field in samples:
        return samples[d.field]
    if isinstance(d.default, bool):
        return not d.default
    if isinstance(d.default, int):
        return d.default + 3
    if isinstance(d.default, float):
        return d.default + 1.5
    return "sample-" + d.field.replace("_", "-")


def sample(cls: type) -> Any:
    """An instance with every setting, groups included, away from its default."""
    values = {d.field: sample_value(cls, d) for d in declared(cls) if not d.path}
    for f in dataclasses.fields(cls):
        factory: Any = f.default_factory
        if f.name not in values and dataclasses.is_dataclass(factory):
            values[f.name] = sample(factory)
    return cls(**values)


@pytest.mark.parametrize("cls", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_flags_and_environment_round_trip(cls: type) -> None:
    original = sample(cls)
    from_env = resolve(cls, to_env(original))
    assert from_env == original
    parser = build_parser()
    command = next(name for name, c in COMMANDS.items() if c.settings() is cls)
    argv = [command, *(["list"] if command == "token" else []), *to_argv(original)]
    args = parser.parse_args(argv)
    assert resolve(cls, {}, args) == original


def test_flag_wins_over_environment_which_wins_over_default() -> None:
    args = build_parser().parse_args(["relay", "--capacity", "5"])
    config = resolve(RelayConfig, {"POLYSOCKET_CAPACITY": "77", "POLYSOCKET_GAP_HOLD": "3"}, args)
    assert (config.capacity, config.gap_hold_s, config.idle_timeout_s) == (5, 3.0, 60.0)


@pytest.mark.parametrize(("env", "message"), [
    ({"POLYSOCKET_IDLE_TIMEOUT": "abc"}, "POLYSOCKET_IDLE_TIMEOUT 'abc': not a number of seconds"),
    ({"POLYSOCKET_CAPACITY": "0"}, "POLYSOCKET_CAPACITY '0': must be a positive integer"),
    ({"POLYSOCKET_NODE_ID": "bad id!"}, "POLYSOCKET_NODE_ID 'bad id!': must be 1-64"),
    ({"POLYSOCKET_METRICS_TOKEN": "x", "POLYSOCKET_HEARTBEAT_TTL": "0"}, "--heartbeat-ttl 0.0: must be at least 0.3"),
    ({"POLYSOCKET_SSL_CERTFILE": "/x.pem"}, "go together"),
])
def test_bad_relay_values_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingError) as err:
        resolve(RelayConfig, env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_secret_values_are_never_echoed() -> None:
    from polysocket_cli.settings import DevSettings

    with pytest.raises(SettingError) as err:
        resolve(DevSettings, {"POLYSOCKET_DEV_TOKEN": "short-secret"})
    assert "short-secret" not in str(err.value) and "16 characters" in str(err.value)


def test_router_timeouts_must_be_ordered() -> None:
    with pytest.raises(SettingError, match="ack-timeout < --establish-timeout < --request-timeout"):
        resolve(RouterSettings, {"POLYSOCKET_ESTABLISH_TIMEOUT": "30"})
    with pytest.raises(SettingError, match="ordered"):
        RouterSettings(ack_timeout_s=5, establish_timeout_s=4)


def test_timeout_chain_across_files_is_ordered() -> None:
    """router ack < relay open < establish < Lambda timeout < client connectTimeout, as shipped."""
    router, relay = RouterSettings(), RelayConfig()
    lambda_timeout = float(re.search(r"^\s+timeout:\s*(\d+)", (REPO_ROOT / "serverless.yml").read_text(),
                                     re.M).group(1))  # type: ignore[union-attr]
    client = (REPO_ROOT / "client" / "polysocket.js").read_text()
    connect_timeout = float(re.search(r"connectTimeout:\s*(\d+)", client).group(1)) / 1000  # type: ignore[union-attr]
    assert router.ack_timeout_s < relay.open_timeout_s < router.establish_timeout_s
    assert router.establish_timeout_s < router.request_timeout_s <= lambda_timeout < connect_timeout
    assert "POLYSOCKET_REQUEST_TIMEOUT: ${self:provider.timeout}" in (REPO_ROOT / "serverless.yml").read_text()


def test_lambda_settings_come_from_the_environment_only() -> None:
    settings = RouterSettings.from_env({"POLYSOCKET_KEY_PREFIX": "t:", "POLYSOCKET_RATE_PER_IP": "1/2",
                                        "POLYSOCKET_ALLOW_TARGET_CIDRS": "127.0.0.0/8, ::1/128"})
    assert settings.key_prefix == "t:" and settings.rate_per_ip == Rate(1, 2)
    assert [str(n) for n in settings.allow_target_cidrs] == ["127.0.0.0/8", "::1/128"]


def test_every_setting_has_help_and_a_unique_name() -> None:
    for cls in SETTINGS_CLASSES:
        names = [d.env for d in declared(cls)]
        assert len(names) == len(set(names))
        for d in declared(cls):
            assert d.spec.help, (cls.__name__, d.field)
        assert all(f.metadata for f in dataclasses.fields(cls)), cls
    assert "--route53-zone-id" in {d.flag for d in declared(RelayConfig)}  # the AWS group is flat flags


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POLYSOCKET_")}
    return subprocess.run([sys.executable, "-m", "polysocket_cli", *argv], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent, env={**clean, **(env or {})})


@pytest.mark.parametrize("command", ["router", "relay", "dev", "echo"])
def test_help_lists_every_setting(command: str) -> None:
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    cls = COMMANDS[command].settings()
    squashed = re.sub(r"\s+", "", out.stdout)  # argparse wraps long help lines
    for d in declared(cls):
        assert d.flag in squashed and d.env in squashed, (d.flag, d.env)


def test_unrelated_variables_do_not_break_a_command() -> None:
    """The environment is read only for the command being run."""
    out = run_cli("token", "list", "--redis-url", "redis://127.0.0.1:1/0",
                  env={"POLYSOCKET_IDLE_TIMEOUT": "abc", "POLYSOCKET_ADMISSION": "bogus"})
    assert "ValueError" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1 and "127.0.0.1:1" in out.stderr, out.stderr


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["dev", "--dev-token", "short"], {}, "polysocket dev: --dev-token (hidden): a token must be at least 16"),
    (["relay"], {"POLYSOCKET_IDLE_TIMEOUT": "abc"}, "polysocket relay: POLYSOCKET_IDLE_TIMEOUT 'abc'"),
    (["router", "--ack-timeout", "20"], {}, "polysocket router: timeouts must be ordered"),
    (["router"], {"POLYSOCKET_ADMISSION": "bogus"}, "POLYSOCKET_ADMISSION: must be one of tokens, open"),
    (["--log-level", "loud", "echo"], {}, "--log-level: must be one of"),
])
def test_bad_settings_exit_2_with_one_line(argv: list[str], env: dict[str, str], message: str) -> None:
    out = run_cli(*argv, env=env)
    assert out.returncode == 2, out
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


# Floors (issue 21, D2): declared on the setting, the check derived from the declaration.

FLOORED = [(cls, d) for cls in SETTINGS_CLASSES for d in declared(cls) if d.spec.floor is not None]
# Every setting that says how often something repeats: below a floor it would spin, not fail.
INTERVALS = {"--max-poll-ttl", "--stream-seconds", "--ping-interval", "--heartbeat-ttl", "--sweep-interval",
             "--record-sweep-interval"}


def test_every_interval_setting_declares_a_floor() -> None:
    assert {d.flag for _, d in FLOORED} >= INTERVALS


@pytest.mark.parametrize(("cls", "d"), FLOORED, ids=lambda v: getattr(v, "flag", getattr(v, "__name__", "")))
def test_a_value_below_its_floor_is_refused_naming_the_flag(cls: type, d: Declared) -> None:
    floor = d.spec.floor
    below = floor // 2 if isinstance(floor, int) else floor / 2
    raw = d.spec.show(below)
    with pytest.raises(SettingError) as err:
        resolve(cls, {d.env: raw})
    message = str(err.value)
    assert message.startswith(f"{d.flag} ") and "at least" in message and "\n" not in message, message
    with pytest.raises(SettingError):
        resolve(cls, {}, build_parser().parse_args([_command(cls), d.flag, raw]))
    assert d.value(resolve(cls, {d.env: d.spec.show(floor)})) == floor  # the floor itself is fine


def _command(cls: type) -> str:
    return next(name for name, c in COMMANDS.items() if c.settings() is cls)


def test_max_poll_ttl_0_is_refused_at_start_up_with_one_line() -> None:
    # Issue 21: `--max-poll-ttl 0` was accepted and made every stream heartbeat in a busy loop.
    out = run_cli("relay", "--max-poll-ttl", "0")
    assert out.returncode == 2, out
    assert "polysocket relay: --max-poll-ttl 0: must be at least 1" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr


def test_the_claim_margin_is_derived_from_the_open_timeout_and_capped_by_the_idle_timeout() -> None:
    """The browser's first request after the router's answer has the steps of the relay's own
    upstream open (new name, TCP, TLS, a request): it gets ``--open-timeout`` for them."""
    assert RelayConfig().claim_margin_s == RelayConfig().open_timeout_s == 10.0
    assert RelayConfig(open_timeout_s=3.0).claim_margin_s == 3.0
    assert RelayConfig(open_timeout_s=90.0, idle_timeout_s=60.0).claim_margin_s == 60.0
