"""Settings of the relay's AWS side. Every field maps to a ``--flag`` / ``POLYSOCKET_*`` variable
(wired by the relay's settings module); the defaults leave everything off."""

from __future__ import annotations

from dataclasses import dataclass

# The EC2 instance metadata service. Only ever a default: tests and non-EC2 hosts pass their own.
EC2_IMDS_URL = "http://169.254.169.254"


@dataclass(frozen=True, slots=True)
class CloudSettings:
    # Route 53: with a zone id, the node UPSERTs "{name}" and "*.{name}" (its fqdn without the port)
    # before it registers in Redis, and DELETEs them after it has drained.
    zone_id: str = ""  # POLYSOCKET_ROUTE53_ZONE_ID
    public_ip: str = ""  # POLYSOCKET_PUBLIC_IP; empty: ask the platform (ECS task metadata, else IMDSv2)
    record_ttl_s: int = 60  # POLYSOCKET_ROUTE53_TTL
    insync_timeout_s: float = 300.0  # POLYSOCKET_ROUTE53_INSYNC_TIMEOUT: give up starting after this
    insync_poll_s: float = 2.0  # how often GetChange is asked while waiting for INSYNC
    # CloudWatch: with a namespace, OpenSockets (Count) and Utilization (Percent, open / capacity)
    # every interval, with one dimension (the one the autoscaling policy tracks) when its value is set.
    cloudwatch_namespace: str = ""  # POLYSOCKET_CLOUDWATCH_NAMESPACE
    metric_interval_s: float = 60.0  # POLYSOCKET_CLOUDWATCH_INTERVAL
    metric_dimension_name: str = "AutoScalingGroupName"  # POLYSOCKET_CLOUDWATCH_DIMENSION_NAME
    metric_dimension_value: str = ""  # POLYSOCKET_CLOUDWATCH_DIMENSION_VALUE; empty: no dimension
    # Public-address discovery (only when zone_id is set and public_ip is not).
    imds_url: str = EC2_IMDS_URL  # POLYSOCKET_IMDS_URL
    metadata_timeout_s: float = 2.0  # per metadata request

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
