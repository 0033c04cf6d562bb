"""Settings of the relay's AWS side. Every field maps to a ``--flag`` / ``POLYSOCKET_*`` variable
(wired by the relay's settings module); the defaults leave everything off."""

from __future__ import annotations

from dataclasses import dataclass

from polysocket_core.settings import seconds, setting, text

# The EC2 instance metadata service. Only ever a default: tests and non-EC2 hosts pass their own.
EC2_IMDS_URL = "http://169.254.169.254"


def _ttl(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0 seconds")
    return value


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
    def enabled(self) -> bool:
        return self.dns_enabled or self.metrics_enabled

    def __post_init__(self) -> None:
        if self.record_ttl_s < 0:
            raise ValueError("record_ttl_s must be >= 0")
        if self.metric_interval_s <= 0:
            raise ValueError("metric_interval_s must be > 0")
        if self.insync_poll_s <= 0 or self.insync_timeout_s <= 0:
            raise ValueError("insync_poll_s and insync_timeout_s must be > 0")
