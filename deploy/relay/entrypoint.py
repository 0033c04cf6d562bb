#!/opt/polysocket/bin/python
"""The relay image's entrypoint (``polysocket-relay-entrypoint``): ``polysocket relay`` in this process.

Before it hands over to the relay (same process, so the relay is what the orchestrator signals):

* **file descriptors**: the soft ``RLIMIT_NOFILE`` is raised to the hard limit. Every socket costs
  two descriptors (the client's HTTP connection and the WebSocket to the target), and container
  runtimes often start processes with a soft limit of 1024 whatever the hard limit is. The hard
  limit is the orchestrator's (ECS task definition ``ulimits``, ``docker run --ulimit nofile=...``).
* **a node name per container**, when ``RELAY_DOMAIN`` is set and ``POLYSOCKET_FQDN`` is not: the
  node id is the ECS task id (from ``$ECS_CONTAINER_METADATA_URI_V4/task``; unique for ever, as an
  EC2 instance id is), else the host name; the relay's name is ``{node}.{RELAY_DOMAIN}``. Every task
  of a service shares one task definition, so the name cannot be a setting there. An explicit
  ``POLYSOCKET_FQDN`` / ``POLYSOCKET_NODE_ID`` always wins.
* **a node id per container** when the relay leases its name from a slot pool
  (``POLYSOCKET_RELAY_DOMAIN``, HTTPS as infra/ deploys it): the same task id, as the node id only
  (the slot gives the name). The slot lease is held under the node id, so it must differ between
  live tasks; the task id also names the task in logs and metrics as ECS shows it.

Stdlib only; any arguments are passed on (``docker run IMAGE --capacity 500``). One exception:
arguments starting with ``token`` run ``polysocket token ...`` instead of the relay, so an operator can
manage tokens from a one-off task inside the VPC (ECS can override a task's command, not its
entrypoint), with the Redis URL the task definition already gives the container.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import sys
import urllib.request
from collections.abc import MutableMapping

DOMAIN_ENV = "RELAY_DOMAIN"
SLOT_DOMAIN_ENV = "POLYSOCKET_RELAY_DOMAIN"
ECS_METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def raise_nofile() -> tuple[int, int]:
    """Soft limit up to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft, hard


def ecs_task_id(metadata_uri: str, timeout_s: float = 2.0) -> str:
    """The task id: the last part of the TaskARN (arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # link-local: never a proxy
    with opener.open(f"{metadata_uri.rstrip('/')}/task", timeout=timeout_s) as r:
        task = json.loads(r.read())
    return str(task["TaskARN"]).rsplit("/", 1)[-1].lower()


def platform_node_id(env: MutableMapping[str, str]) -> str:
    """The ECS task id, else the host name; refused unless it is a DNS label."""
    uri = env.get(ECS_METADATA_ENV, "")
    node = ecs_task_id(uri) if uri else socket.gethostname().split(".")[0].lower()
    if LABEL_RE.fullmatch(node) is None:
        raise SystemExit(f"polysocket-relay-entrypoint: node id {node!r} is not a DNS label; set POLYSOCKET_NODE_ID")
    return node


def node_name(env: MutableMapping[str, str]) -> None:
    """Set POLYSOCKET_NODE_ID and POLYSOCKET_FQDN from the platform (see the module doc)."""
    domain = env.get(DOMAIN_ENV, "").strip().rstrip(".").lower()
    if not domain:
        if env.get(SLOT_DOMAIN_ENV, "").strip() and not env.get("POLYSOCKET_NODE_ID"):
            env["POLYSOCKET_NODE_ID"] = platform_node_id(env)
        return
    if env.get("POLYSOCKET_FQDN"):
        return
    node = env.get("POLYSOCKET_NODE_ID", "").lower() or platform_node_id(env)
    if LABEL_RE.fullmatch(node) is None:
        raise SystemExit(f"polysocket-relay-entrypoint: node id {node!r} is not a DNS label; set POLYSOCKET_NODE_ID")
    env.setdefault("POLYSOCKET_NODE_ID", node)
    env["POLYSOCKET_FQDN"] = f"{node}.{domain}"


def main(argv: list[str]) -> int:
    from polysocket_cli.main import main as polysocket

    if argv[:1] == ["token"]:
        return int(polysocket(argv) or 0)
    soft, hard = raise_nofile()
    node_name(os.environ)
    print(f"polysocket-relay-entrypoint: nofile {soft}/{hard}, node {os.environ.get('POLYSOCKET_NODE_ID', '-')}, "
          f"fqdn {os.environ.get('POLYSOCKET_FQDN', '-')}", file=sys.stderr, flush=True)
    return int(polysocket(["relay", *argv]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
