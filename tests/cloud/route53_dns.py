"""A DNS server on loopback that answers from LocalStack's Route 53, for the tests.

LocalStack's own DNS server does not serve Route 53 records in the edition the tests use, so this
one does: every query reads the hosted zones and their record sets through boto3 (the Route 53 API,
as a real resolver would see the zone after INSYNC) and answers A and TXT, with wildcards, as the
authority (NXDOMAIN for names that do not exist in a zone, no data for other types, REFUSED outside
every zone). pebble's DNS-01 checks (``-dnsserver``) query it.
"""

from __future__ import annotations

import threading
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer


class _Quiet:
    """dnslib's logger interface, silent."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _norm(name: str) -> str:
    return name.replace("\\052", "*").rstrip(".").lower()


def _txt_strings(value: str) -> list[str]:
    """``"a" "b"`` (Route 53's TXT value syntax) -> ["a", "b"]."""
    parts = [p for i, p in enumerate(value.split('"')) if i % 2 == 1]
    return parts or [value]


class Route53Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, client: Any) -> None:
        self.client = client
        self.lock = threading.Lock()  # one boto3 call at a time
        self.queries: list[tuple[str, str]] = []

    def _zone(self, qname: str) -> tuple[str, str] | None:
        best: tuple[str, str] | None = None
        for page in self.client.get_paginator("list_hosted_zones").paginate():
            for z in page["HostedZones"]:
                name = _norm(z["Name"])
                if (qname == name or qname.endswith("." + name)) and (best is None or len(name) > len(best[1])):
                    best = (z["Id"], name)
        return best

    def _rrsets(self, zone_id: str) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for page in self.client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
            for r in page["ResourceRecordSets"]:
                out.setdefault(_norm(r["Name"]), []).append(r)
        return out

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        qname = _norm(str(request.q.qname))
        qtype = QTYPE[request.q.qtype]
        self.queries.append((qname, qtype))
        with self.lock:
            zone = self._zone(qname)
            rrsets = self._rrsets(zone[0]) if zone else {}
        if zone is None:
            reply.header.rcode = RCODE.REFUSED
            return reply
        found = rrsets.get(qname)
        if found is None and qname != zone[1]:
            found = rrsets.get("*." + qname.split(".", 1)[1])  # a wildcard one label up
        if found is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for r in found:
            if r["Type"] != qtype or r["Type"] not in ("A", "TXT"):
                continue
            for v in r.get("ResourceRecords", []):
                rdata = A(v["Value"]) if r["Type"] == "A" else TXT(_txt_strings(v["Value"]))
                reply.add_answer(RR(str(request.q.qname), request.q.qtype, rdata=rdata, ttl=int(r.get("TTL", 60))))
        return reply


class Route53DNS:
    """UDP and TCP on 127.0.0.1:port."""

    def __init__(self, client: Any, port: int) -> None:
        self.port = port
        self.resolver = Route53Resolver(client)
        self.servers = [DNSServer(self.resolver, address="127.0.0.1", port=port, tcp=tcp, logger=_Quiet())
                        for tcp in (False, True)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Route53DNS:
        for s in self.servers:
            s.start_thread()
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
            s.server.server_close()
