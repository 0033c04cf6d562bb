"""Reading the Dockerfile as the image builder does, and mapping the image's build stage and command to
this machine, so tests build the relay's venv with the image's own build steps and run its ENTRYPOINT +
CMD as processes, without a container runtime."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

from polysocket_cli.processes import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
IMAGE_SCRIPTS = {  # where the image puts them -> the file in this repository
    "/usr/local/bin/polysocket-relay-entrypoint": REPO_ROOT / "deploy" / "relay" / "entrypoint.py",
    "/usr/local/bin/polysocket-relay-healthcheck": REPO_ROOT / "deploy" / "relay" / "healthcheck.py",
}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments and the parser directive dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for word, rest in instructions:
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
    return args


def image_command(dockerfile: list[tuple[str, str]]) -> list[str]:
    final = {w: r for w, r in stages(dockerfile)[-1]}
    argv = [*json.loads(final["ENTRYPOINT"]), *json.loads(final["CMD"])]
    scripts = {Path(k).name: v for k, v in IMAGE_SCRIPTS.items()}
    return [sys.executable, str(scripts[argv[0]]), *argv[1:]]


def build_stage_script(dockerfile: list[tuple[str, str]], paths: dict[str, Path]) -> tuple[str, dict[str, str], Path]:
    """The build stage's RUN lines as one bash script, with the image's paths (``paths``: ``/src``,
    ``/wheels``, ``/opt/...``) mapped to directories here and the base image's ``python`` to this
    interpreter; the environment its ARG defaults and ENV lines give; the directory its WORKDIR maps to.
    A RUN that installs system packages (apt-get) is left out: ``make deps`` installs them here."""
    build = stages(dockerfile)[0]
    env: dict[str, str] = {}
    workdir = Path("/")
    commands: list[str] = []
    image_path = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(k) for k in sorted(paths, key=len, reverse=True))
                            + r")(?=[/\s\"']|$)")

    def mapped(text: str) -> str:
        text = image_path.sub(lambda m: str(paths[m.group(1)]), text)
        return re.sub(r"(?<![\w/.-])python -m ", f"{shlex.quote(sys.executable)} -m ", text)

    for word, rest in build:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            env[name] = value
        elif word == "ENV":
            env.update(item.partition("=")[::2] for item in shlex.split(rest))
        elif word == "WORKDIR":
            workdir = Path(mapped(rest))
        elif word == "RUN" and "apt-get" not in rest:
            commands.append(mapped(rest))
    assert commands, "the build stage has no RUN to run"
    return "set -euo pipefail\n" + "\n".join(commands) + "\n", env, workdir
