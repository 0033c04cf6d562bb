"""One declaration per setting: a dataclass field carries its default, parser, help and names.

Each service declares its settings once, as a dataclass whose fields are made with :func:`setting`.
From that one declaration come the command-line flag (``--idle-timeout``), the environment
variable (``POLYSOCKET_IDLE_TIMEOUT``), the ``--help`` text and the parsing, so none of them can
drift apart. Pure: the environment is passed in as a mapping, nothing here reads ``os.environ``,
so the Lambda imports it for free and tests need no monkeypatching.

Precedence: a flag given on the command line, else the variable when set and not empty, else the
default. A bad value raises :class:`SettingError`, one line naming the flag or the variable.
Cross-field checks live in each class's ``__post_init__`` and raise the same error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .control import DEFAULT_PREFIX as DEFAULT_KEY_PREFIX

if TYPE_CHECKING:  # argparse is only needed by the CLI; the Lambda never imports it
    import argparse

ENV_PREFIX = "POLYSOCKET_"
_SPEC = "polysocket.setting"
_GROUP = "polysocket.settings-group"
T = TypeVar("T")


class SettingError(ValueError):
    """A setting that cannot be used; the message is one line that names its source."""


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """How one field is parsed, shown and named. ``name`` is the flag without dashes."""

    parse: Callable[[str], Any]
    help: str
    name: str = ""
    show: Callable[[Any], str] = str  # the default as a user would type it (and the round trip back)
    choices: tuple[str, ...] = ()
    secret: bool = False  # never echoed in errors or help
    floor: Any = None  # the least value that works (an interval below it spins); checked by check_floors


def setting(default: Any = dataclasses.MISSING, parse: Callable[[str], Any] = str, help: str = "", *,
            name: str = "", show: Callable[[Any], str] = str, choices: Sequence[str] = (),
            secret: bool = False, factory: Callable[[], Any] | None = None, floor: Any = None) -> Any:
    """A dataclass field that is also a flag and a ``POLYSOCKET_*`` variable. ``floor``: the least
    value that works, in the field's own unit (see :func:`check_floors`)."""
    spec = Spec(parse, help, name, show, tuple(choices), secret, floor)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_SPEC: spec})
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def group(cls: type) -> Any:
    """A field holding another settings class whose settings are flat flags of this one (the relay's
    AWS settings live in ``relay_node.control.aws`` but are flags of ``polysocket relay``)."""
    return dataclasses.field(default_factory=cls, metadata={_GROUP: cls})


@dataclasses.dataclass(frozen=True, slots=True)
class Declared:
    """A field of a settings class together with its derived names. ``path`` leads to it through
    groups (empty for a field of the class itself)."""

    field: str
    spec: Spec
    flag: str
    env: str
    default: Any
    path: tuple[str, ...] = ()

    def value(self, settings: object) -> Any:
        for name in self.path:
            settings = getattr(settings, name)
        return getattr(settings, self.field)

    def shown_default(self) -> str:
        if self.default is dataclasses.MISSING or self.default in ("", None) or self.spec.secret:
            return ""
        return self.spec.show(self.default)


def declared(cls: type, path: tuple[str, ...] = ()) -> Iterator[Declared]:
    """Every setting a class declares, groups included, in declaration order."""
    for f in dataclasses.fields(cls):
        if _GROUP in f.metadata:
            yield from declared(f.metadata[_GROUP], (*path, f.name))
            continue
        spec = f.metadata.get(_SPEC)
        if spec is None:
            continue
        name = spec.name or f.name.replace("_", "-")
        default: Any = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        yield Declared(f.name, spec, "--" + name, ENV_PREFIX + name.replace("-", "_").upper(), default, path)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per setting. Values stay raw strings here: :func:`resolve` parses them, so a bad
    flag and a bad variable get the same one-line error."""
    for d in declared(cls):
        bits = [f"env {d.env}"]
        if d.shown_default():
            bits.append(f"default: {d.shown_default()}")
        if d.spec.choices:
            bits.insert(0, "one of " + ", ".join(d.spec.choices))
        parser.add_argument(d.flag, dest=_dest(d), default=None, metavar=_METAVARS.get(d.spec.parse, "VALUE"),
                            help=f"{d.spec.help} ({'; '.join(bits)})")


def _dest(d: Declared) -> str:
    return "setting__" + d.field


def _parse(d: Declared, raw: str, source: str) -> Any:
    if d.spec.choices and raw not in d.spec.choices:
        raise SettingError(f"{source}: must be one of {', '.join(d.spec.choices)}, not {raw!r}")
    try:
        return d.spec.parse(raw)
    except (ValueError, TypeError) as exc:
        shown = "(hidden)" if d.spec.secret else repr(raw)
        raise SettingError(f"{source} {shown}: {exc}") from None


def resolve(cls: type[T], env: Mapping[str, str], args: argparse.Namespace | None = None,
            **fixed: Any) -> T:
    """Build ``cls`` from flags, then the environment, then defaults. ``fixed`` wins over all
    (values a command computes itself)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if _GROUP in f.metadata and f.name not in fixed:
            values[f.name] = resolve(f.metadata[_GROUP], env, args)
    for d in declared(cls):
        if d.field in fixed or d.path:
            continue
        raw = getattr(args, _dest(d), None) if args is not None else None
        if raw is not None:
            values[d.field] = _parse(d, raw, d.flag)
        elif env.get(d.env, "") != "":
            values[d.field] = _parse(d, env[d.env], d.env)
    try:
        return cls(**values, **fixed)
    except SettingError:
        raise
    except (ValueError, TypeError) as exc:
        raise SettingError(str(exc)) from None


def check_floors(settings: object) -> None:
    """Refuse a setting below its declared floor, one line naming the flag (called from each
    class's ``__post_init__``, so a value built in code is checked like a flag). An interval below
    its floor would not fail, it would spin: ``--max-poll-ttl 0`` once made every stream heartbeat
    in a busy loop. ``None`` (an interval turned off) has no floor."""
    for d in declared(type(settings)):
        floor = d.spec.floor
        value = d.value(settings)
        if floor is not None and value is not None and value < floor:
            raise SettingError(f"{d.flag} {d.spec.show(value)}: must be at least {d.spec.show(floor)}")


def to_env(settings: object) -> dict[str, str]:
    """The variables that reproduce ``settings`` (for child processes and deploy templates)."""
    return {d.env: d.spec.show(d.value(settings)) for d in declared(type(settings))}


def to_argv(settings: object) -> list[str]:
    """The flags that reproduce ``settings``; settings still at their default are left out."""
    argv: list[str] = []
    for d in declared(type(settings)):
        value = d.value(settings)
        if value != d.default:
            argv += [d.flag, d.spec.show(value)]
    return argv


def env_names(*classes: type) -> set[str]:
    return {d.env for cls in classes for d in declared(cls)}


# Parsers: each raises ValueError with a message that completes "--flag 'raw': ...".

def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def port(raw: str) -> int:
    value = positive_int(raw)
    if value > 65535:
        raise ValueError("must be a port number, 1-65535")
    return value


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number of seconds >= 0")
    return value


def optional_seconds(raw: str) -> float | None:
    """Seconds, or ``off``."""
    return None if raw.strip().lower() in ("off", "none") else seconds(raw)


def show_optional_seconds(value: float | None) -> str:
    return "off" if value is None else str(value)


def show_list(value: Sequence[object]) -> str:
    return ",".join(str(v) for v in value)


def text(raw: str) -> str:
    return raw


_METAVARS: dict[Callable[[str], Any], str] = {
    positive_int: "N", port: "PORT", seconds: "SECONDS", optional_seconds: "SECONDS|off",
}


# Settings shared by several services: declared here once, so their default is written once.

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url_setting() -> Any:
    return setting(DEFAULT_REDIS_URL, text, "Redis / Valkey URL of the control plane: redis:// or rediss:// (TLS) for "
                   "one node, redis+cluster:// or rediss+cluster:// for a Redis Cluster (any one node's address)")


def redis_ca_file_setting() -> Any:
    return setting("", text, "CA bundle (PEM) that verifies a rediss:// control plane, for a certificate from "
                   "a private CA (default: the system's trust store, which SSL_CERT_FILE replaces)")


def key_prefix_setting() -> Any:
    return setting(DEFAULT_KEY_PREFIX, text,
                   "prefix of every control-plane key; routers, relays and `polysocket token` must agree")
