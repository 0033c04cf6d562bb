"""Reading the Dockerfile as the image builder does, and mapping the image's command to the files in
this checkout, so tests run the relay image's ENTRYPOINT + CMD as processes without a container runtime."""

from __future__ import annotations

import json
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
