"""A node's A records in Route 53, and the Route 53 side of sweeping records of nodes that are gone
(the periodic sweeper that every relay runs is ``relay_node.control.aws.sweeper``).

Plain blocking boto3 (callers on an event loop run these in ``asyncio.to_thread``). A node named
``tom.relay.example.com`` owns exactly two A records: ``tom.relay.example.com`` (its ``--fqdn``
without the port) and ``*.tom.relay.example.com`` (the per-socket names ``{uniq}.tom...``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
from botocore.exceptions import ClientError

from .staleness import node_host, node_of_record, normalize_name

log = logging.getLogger("polysocket.relay.aws")

Client = Any  # a boto3 Route 53 client (no stubs are required)


def route53_client() -> Client:
    """A client configured by the SDK alone (credentials, AWS_ENDPOINT_URL[_ROUTE53])."""
    return boto3.session.Session().client("route53")


def node_record_names(name: str) -> tuple[str, str]:
    """The node's two record names: ``name`` without a port, and its wildcard."""
    host = node_host(name)
    if not host or host.startswith("*."):
        raise ValueError(f"not a node name: {name!r}")
    return host, f"*.{host}"


def _change(action: str, name: str, ip: str, ttl: int) -> dict[str, Any]:
    return {"Action": action, "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": ttl,
                                                    "ResourceRecords": [{"Value": ip}]}}


def upsert_node_records(client: Client, zone_id: str, name: str, ip: str, ttl: int = 60) -> str:
    """UPSERT both A records in one change batch; returns the change id (wait for it with wait_insync)."""
    names = node_record_names(name)
    answer = client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
        "Comment": f"polysocket relay {names[0]} UPSERT",
        "Changes": [_change("UPSERT", n, ip, ttl) for n in names]})
    change_id: str = answer["ChangeInfo"]["Id"]
    log.info("route53: UPSERT %s and %s -> %s (%s)", *names, ip, change_id)
    return change_id


def wait_insync(client: Client, change_id: str, *, timeout_s: float = 300.0, poll_s: float = 2.0,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll GetChange until INSYNC (boto3's own waiter polls only every 30 s). TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_change(Id=change_id)["ChangeInfo"]["Status"]
        if status == "INSYNC":
            return
        if time.monotonic() + poll_s > deadline:
            raise TimeoutError(f"route53 change {change_id} still {status} after {timeout_s:g} s")
        sleep(poll_s)


def list_record_sets(client: Client, zone_id: str) -> Iterator[dict[str, Any]]:
    """Every record set of the zone, as Route 53 lists it (what a DELETE must name exactly)."""
    for page in client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        yield from page["ResourceRecordSets"]


def list_a_records(client: Client, zone_id: str) -> Iterator[dict[str, Any]]:
    return (r for r in list_record_sets(client, zone_id) if r["Type"] == "A")


def _delete_rrsets(client: Client, zone_id: str, rrsets: list[dict[str, Any]], comment: str) -> str | None:
    """DELETE exactly these record sets (as listed) in one batch; None when there is nothing to delete."""
    if not rrsets:
        return None
    answer = client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
        "Comment": comment, "Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in rrsets]})
    change_id: str = answer["ChangeInfo"]["Id"]
    return change_id


def delete_node_records(client: Client, zone_id: str, name: str, ip: str | None = None, ttl: int = 60) -> bool:
    """DELETE the node's two A records. Records already gone are not an error (returns False).

    A DELETE must name the record exactly as it is. With ``ip`` (what this node UPSERTed) that is
    tried first, in one call; if Route 53 refuses it (gone, or changed since), the current records
    of the two names are looked up and deleted as they are.
    """
    names = node_record_names(name)
    comment = f"polysocket relay {names[0]} DELETE"
    if ip is not None:
        try:
            client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Comment": comment, "Changes": [_change("DELETE", n, ip, ttl) for n in names]})
            log.info("route53: DELETE %s and %s", *names)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InvalidChangeBatch":
                raise
    # The fallback path only (rare): scan the zone rather than rely on the listing order.
    found = [r for r in list_a_records(client, zone_id) if normalize_name(r["Name"]) in names]
    if _delete_rrsets(client, zone_id, found, comment) is None:
        log.info("route53: %s has no records left to delete", names[0])
        return False
    log.info("route53: DELETE %s", ", ".join(normalize_name(r["Name"]) for r in found))
    return True


def delete_record_sets(client: Client, zone_id: str, rrsets: list[dict[str, Any]],
                       comment: str = "polysocket sweep of stale relay records") -> None:
    """DELETE record sets exactly as listed, in batches. One batch is atomic: if a record changed
    since it was listed, nothing in the batch is deleted and the next sweep sees the new state.
    Route 53 takes up to 1000 changes per batch."""
    for i in range(0, len(rrsets), 500):
        _delete_rrsets(client, zone_id, rrsets[i:i + 500], comment)


def stale_records(client: Client, zone_id: str, relay_domain: str,
                  live_node_fqdns: Iterable[str]) -> list[dict[str, Any]]:
    """A records of node names under ``relay_domain`` whose node is not in ``live_node_fqdns``.

    Only names of the node shape are considered, ``{label}.{relay_domain}`` and
    ``*.{label}.{relay_domain}``: the domain's own records, deeper names and other types stay untouched.
    """
    live = {node_host(f) for f in live_node_fqdns}
    return [r for r in list_a_records(client, zone_id)
            if (node := node_of_record(r["Name"], relay_domain)) is not None and node not in live]


def sweep_records(zone_id: str, relay_domain: str, live_node_fqdns: Iterable[str], *,
                  client: Client | None = None, dry_run: bool = False) -> list[str]:
    """Delete the A records of relay nodes that are no longer registered; returns the names deleted.

    ``live_node_fqdns`` is the set of fqdns of nodes registered in the control plane (the ``fqdn``
    field of every node in Redis, ports allowed); Redis is the caller's business, so this is pure
    Route 53. It deletes at once: a node that has UPSERTed its records but not yet registered in
    Redis (the few seconds of its start) would lose them. Run it by hand (``python -m
    relay_node.control.aws.sweep``) after an incident; the periodic sweep that every relay runs
    (``relay_node.control.aws.sweeper``) waits for a grace period before deleting.

    Not the router: the router Lambda lives in private subnets without a route to AWS APIs, and it
    should hold no Route 53 permission.
    """
    if client is None:
        client = route53_client()
    stale = stale_records(client, zone_id, relay_domain, live_node_fqdns)
    names = [normalize_name(r["Name"]) for r in stale]
    if stale and not dry_run:
        delete_record_sets(client, zone_id, stale)
    if names:
        log.info("route53 sweep%s: %s", " (dry run)" if dry_run else "", ", ".join(names))
    return names

