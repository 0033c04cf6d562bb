"""The client address the per-IP rate limit counts, trusting ``X-Forwarded-For`` only from known proxies.

``X-Forwarded-For`` is written by every hop, including the client itself, so only the entries added
by proxies we trust say anything. The walk is the one uvicorn's ``--forwarded-allow-ips`` does:
start from the address that connected to us; while it is a trusted proxy, step to the entry that
proxy appended (the right-most one not yet consumed). The first untrusted address is the client.
With no trusted proxies (the default) ``X-Forwarded-For`` is ignored entirely.

Where the connecting address comes from:

* uvicorn (or any ASGI server): ``scope["client"]``. Run uvicorn with ``proxy_headers=False`` so
  that it does not rewrite that address itself from ``X-Forwarded-For`` (its default trusts
  loopback peers); this module does the walk with the router's own ``trusted_proxies``.
* AWS Lambda through Mangum (``scope["aws.event"]``), explicitly per front door:
  - API Gateway HTTP API (payload 2.0): ``requestContext.http.sourceIp``;
  - API Gateway REST API (payload 1.0): ``requestContext.identity.sourceIp``.
    API Gateway appends that same address to ``X-Forwarded-For``; that entry is not counted twice.
  - Application Load Balancer (``requestContext.elb``): the ALB appends the peer it saw as the
    **last** ``X-Forwarded-For`` entry; everything before it is the client's claim.
  Each of these is the address the AWS front door saw, which nothing in the request can forge.
  ``trusted_proxies`` still applies on top (e.g. CloudFront's ranges in front of API Gateway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .ssrf import IPNetwork

MAX_FORWARDED_ENTRIES = 32  # a longer chain is not walked further (bounded work per request)


def _ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    raw = raw.strip()
    if raw.startswith("[") and "]" in raw:  # "[v6]:port"
        raw = raw[1:raw.index("]")]
    elif raw.count(":") == 1:  # "v4:port"
        raw = raw.split(":", 1)[0]
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        return None


def _trusted(addr: str, trusted: Sequence[IPNetwork]) -> bool:
    ip = _ip(addr)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)


def _split(values: Iterable[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def resolve(peer: str, forwarded: list[str], trusted: Sequence[IPNetwork]) -> str:
    """Walk ``forwarded`` (X-Forwarded-For entries, left to right) from the right while ``peer`` is trusted."""
    chain = forwarded[-MAX_FORWARDED_ENTRIES:]
    while chain and _trusted(peer, trusted):
        candidate = chain.pop()
        if _ip(candidate) is None:
            break  # a trusted proxy wrote something that is not an address: stop at the proxy
        peer = candidate
    return str(_ip(peer) or peer)


def _event_headers(event: Mapping[str, Any], name: str) -> list[str]:
    values: list[str] = []
    for key in ("multiValueHeaders", "headers"):
        headers = event.get(key) or {}
        for k, v in headers.items():
            if k.lower() == name:
                values.extend(v if isinstance(v, list) else [v])
        if values:
            return [str(v) for v in values]
    return values


def lambda_peer(event: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """The address the AWS front door saw and the X-Forwarded-For entries before it; None if the
    event is of no known shape."""
    ctx = event.get("requestContext") or {}
    forwarded = _split(_event_headers(event, "x-forwarded-for"))
    source = None
    if isinstance(ctx.get("http"), Mapping):  # API Gateway HTTP API, payload 2.0
        source = ctx["http"].get("sourceIp")
    elif isinstance(ctx.get("identity"), Mapping):  # API Gateway REST API, payload 1.0
        source = ctx["identity"].get("sourceIp")
    elif "elb" in ctx:  # ALB: it appended the peer it saw as the last entry
        return (forwarded[-1], forwarded[:-1]) if forwarded else ("", [])
    if not source:
        return None
    if forwarded and forwarded[-1] == source:
        forwarded = forwarded[:-1]  # API Gateway appended the source address itself
    return str(source), forwarded


def client_address(scope: Mapping[str, Any], trusted: Sequence[IPNetwork]) -> str:
    """The client address of an ASGI HTTP request (see the module docstring)."""
    event = scope.get("aws.event")
    if isinstance(event, Mapping):
        found = lambda_peer(event)
        if found is not None:
            return resolve(found[0], found[1], trusted)
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not trusted:
        return peer
    forwarded = _split(v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for")
    return resolve(peer, forwarded, trusted)
