"""Settings of the relay's AWS side. Every field maps to a ``--flag`` / ``POLYSOCKET_*`` variable
(wired by the relay's settings module); the defaults leave everything off."""

from __future__ import annotations

from dataclasses import dataclass

from polysocket_core.settings import check_floors, positive_int, seconds, setting, text

from .slots import MAX_SLOTS, parse_relay_domain

# Each record sweep lists the whole zone: Route 53 allows 5 API requests a second per account,
# shared with every INSYNC poll of the fleet, so a sweep interval below this would eat into it.
MIN_RECORD_SWEEP_INTERVAL_S = 1.0

# The EC2 instance metadata service. Only ever a default: tests and non-EC2 hosts pass their own.
EC2_IMDS_URL = "http://169.254.169.254"


def _ttl(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0 seconds")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(raw: str) -> float:
    """Seconds, or a number with a unit: ``90s``, ``15m``, ``12h``, ``30d``."""
    text = raw.strip().lower()
    factor = _UNITS.get(text[-1:], 0)
    return seconds(text[:-1] if factor else text) * (factor or 1)


def show_duration(value: float) -> str:
    """The shortest exact spelling: ``30d``, ``12h``, ``90``, ``2.5``."""
    for unit in ("d", "h", "m"):
        if value and value % _UNITS[unit] == 0:
            return f"{int(value // _UNITS[unit])}{unit}"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _relay_domain(raw: str) -> str:
    if raw:
        parse_relay_domain(raw)
    return raw.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class CloudSettings:
    """Flags of ``polysocket relay`` (a settings group of ``RelayConfig``); all off by default."""

    # Route 53: with a zone id, the node UPSERTs "{name}" and "*.{name}" (its fqdn without the port)
    # before it registers in Redis, and DELETEs them after it has drained.
    zone_id: str = setting("", text, "Route 53 hosted zone: register {name} and *.{name} to this node's "
                           "public address while it lives (off when empty)", name="route53-zone-id")
    public_ip: str = setting("", text, "the address the records point to (default: ask the platform: "
                             "ECS task metadata, else EC2 IMDSv2)")
    record_ttl_s: int = setting(60, _ttl, "TTL of the node's A records, seconds", name="route53-ttl")
    insync_timeout_s: float = setting(300.0, seconds, "give up starting when Route 53 is not INSYNC by then",
                                      name="route53-insync-timeout")
    insync_poll_s: float = setting(2.0, seconds, "how often Route 53 is asked while waiting for INSYNC",
                                   name="route53-insync-poll")
    # The sweep: with a zone id, every relay looks for A records of dead nodes this often; the fleet
    # sweeps about once per interval (a Redis lock, one at a time), after a grace derived below.
    record_sweep_interval_s: float = setting(60.0, seconds, "how often the fleet deletes A records of "
                                             "nodes no longer alive (after a grace: see docs/deploy.md)",
                                             name="record-sweep-interval", floor=MIN_RECORD_SWEEP_INTERVAL_S)
    # CloudWatch: with a namespace, OpenSockets (Count) and Utilization (Percent, open / capacity)
    # every interval, with one dimension (the one the autoscaling policy tracks) when its value is set.
    cloudwatch_namespace: str = setting("", text, "publish OpenSockets and Utilization to this CloudWatch "
                                        "namespace (off when empty)")
    metric_interval_s: float = setting(60.0, seconds, "seconds between two CloudWatch datapoints",
                                       name="cloudwatch-interval")
    metric_dimension_name: str = setting("AutoScalingGroupName", text, "dimension the autoscaling policy tracks",
                                         name="cloudwatch-dimension-name")
    metric_dimension_value: str = setting("", text, "value of that dimension (no dimension when empty)",
                                          name="cloudwatch-dimension-value")
    # Slots: with a relay domain the node leases a free slot s00..sNN in Redis and its fqdn becomes
    # "{slot}.{relay_domain}" (whatever --fqdn says); the lease lives as long as the node does.
    relay_domain: str = setting("", _relay_domain, "lease a slot name {slot}.RELAY_DOMAIN (s00, s01, ...) as this "
                                "node's fqdn; may end with :PORT, the public port clients use (off when empty)")
    slot_count: int = setting(32, positive_int, "slots in the pool (the fleet's maximum size)")
    slot_lease_ttl_s: float = setting(30.0, seconds, "a dead node's slot is free again after this long",
                                      name="slot-lease-ttl")
    # Certificates: with an ACME directory, the slot's certificate ({slot} and *.{slot}) comes from the
    # store, or by ACME DNS-01 through the Route 53 zone, and the relay serves HTTPS with it.
    acme_directory: str = setting("", text, "ACME directory URL for the slot certificates, e.g. "
                                  "https://acme-v02.api.letsencrypt.org/directory (off when empty)")
    acme_email: str = setting("", text, "contact address of the fleet's ACME account")
    acme_ca_bundle: str = setting("", text, "verify the ACME server against this CA bundle (PEM file) "
                                  "instead of the system's roots")
    acme_timeout_s: float = setting(600.0, seconds, "give up one ACME order after this long",
                                    name="acme-timeout")
    cert_store: str = setting("secretsmanager", text, "where certificates and the ACME account key are "
                              "stored, encrypted", choices=("secretsmanager", "s3"))
    cert_prefix: str = setting("polysocket/", text, "name prefix of the stored secrets / objects")
    cert_bucket: str = setting("", text, "S3 bucket of --cert-store s3")
    kms_key_id: str = setting("", text, "KMS key for the stored certificates (default: the service's "
                              "AWS-managed key)")
    renew_before_s: float = setting(30 * 86400.0, duration, "renew a certificate when less than this "
                                    "remains (s, m, h, d)", name="renew-before", show=show_duration)
    cert_check_interval_s: float = setting(12 * 3600.0, duration, "how often a serving node looks at its "
                                           "certificate's remaining time", name="cert-check-interval",
                                           show=show_duration)
    # Public-address discovery (only when zone_id is set and public_ip is not).
    imds_url: str = setting(EC2_IMDS_URL, text, "EC2 instance metadata service")
    metadata_timeout_s: float = setting(2.0, seconds, "per metadata request", name="metadata-timeout")

    @property
    def dns_enabled(self) -> bool:
        return bool(self.zone_id)

    @property
    def metrics_enabled(self) -> bool:
        return bool(self.cloudwatch_namespace)

    @property
    def slots_enabled(self) -> bool:
        return bool(self.relay_domain)

    @property
    def certs_enabled(self) -> bool:
        return bool(self.acme_directory)

    @property
    def enabled(self) -> bool:
        return self.dns_enabled or self.metrics_enabled

    def record_sweep_grace_s(self, heartbeat_ttl_s: float) -> float:
        """How long a node's records must be seen missing from the live set before the sweep deletes
        them: longer than a living node can be missing from it -- its heartbeat TTL (a late beat),
        its slot lease (a node cut off from Redis keeps its name that long), and its start (the
        records are UPSERTed, then INSYNC is awaited for up to ``insync_timeout_s``, then the node
        registers) -- plus one sweep interval, since sweeps see the world only that often."""
        lease = self.slot_lease_ttl_s if self.slots_enabled else 0.0
        return max(heartbeat_ttl_s, lease, self.insync_timeout_s) + self.record_sweep_interval_s

    def record_sweep_bound_s(self, heartbeat_ttl_s: float) -> float:
        """The documented bound (docs/deploy.md) from a node's death to its records' deletion, Route 53's
        own time aside: its name leaves the live set within its heartbeat TTL (slot lease), the
        first sweep that sees it missing comes within an interval, the grace runs, and the sweep
        that deletes comes within another interval."""
        lease = self.slot_lease_ttl_s if self.slots_enabled else 0.0
        return (max(heartbeat_ttl_s, lease) + self.record_sweep_grace_s(heartbeat_ttl_s)
                + 2 * self.record_sweep_interval_s)

    def __post_init__(self) -> None:
        check_floors(self)
        if self.record_ttl_s < 0:
            raise ValueError("record_ttl_s must be >= 0")
        if self.metric_interval_s <= 0:
            raise ValueError("metric_interval_s must be > 0")
        if self.insync_poll_s <= 0 or self.insync_timeout_s <= 0:
            raise ValueError("insync_poll_s and insync_timeout_s must be > 0")
        if self.slot_count > MAX_SLOTS:
            raise ValueError(f"--slot-count must be at most {MAX_SLOTS}")
        if self.slot_lease_ttl_s <= 0:
            raise ValueError("--slot-lease-ttl must be above 0 seconds")
        if self.certs_enabled:
            if not self.slots_enabled:
                raise ValueError("--acme-directory needs --relay-domain (certificates are per slot)")
            if not self.zone_id:
                raise ValueError("--acme-directory needs --route53-zone-id (DNS-01 through Route 53)")
            if self.cert_store == "s3" and not self.cert_bucket:
                raise ValueError("--cert-store s3 needs --cert-bucket")
        if self.cert_check_interval_s <= 0:
            raise ValueError("--cert-check-interval must be above 0")
