# polysocket on AWS: the pieces Terraform owns.
#
#   network.tf          VPC, public subnets (relay tasks: a public IP each), private subnets (ElastiCache,
#                       router Lambda); a NAT gateway only when the control plane is an external Redis
#   security_groups.tf  relay, Redis and Lambda security groups
#   redis.tf            ElastiCache (Valkey by default) replication group: the control plane, unless
#                       var.redis_url names an existing one
#   ecs.tf              the relay fleet: ECR repository, ECS cluster, task definition, service, logs
#   autoscaling.tf      target tracking on the relays' own Utilization metric and on CPU
#   iam.tf              task execution role (pull, logs, secrets) and task role (the relay's own
#                       Route 53 records, its metrics, its public-address lookup)
#   ssm.tf              SSM parameters read by the relays (as ECS secrets), by serverless.yml at deploy,
#                       and by whatever scrapes the relays' /metrics
#
# The router Lambda and its HTTP API are deployed by serverless.yml, not here.

data "aws_availability_zones" "available" {
  # checkov:skip=CKV_AWS_394:the zones are pinned by var.availability_zones when given; otherwise the first az_count of the region's standard zones, sorted by name, which a new zone does not reorder
  state = "available"

  # standard zones only: Local and Wavelength Zones lack NAT gateways, ElastiCache and Fargate
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name               = "polysocket-${var.stage}"
  relay_service_name = "polysocket-${var.stage}-relays"
  azs                = length(var.availability_zones) > 0 ? var.availability_zones : slice(data.aws_availability_zones.available.names, 0, var.az_count)
  partition          = data.aws_partition.current.partition
  account_id         = data.aws_caller_identity.current.account_id

  ssm_prefix = "/polysocket/${var.stage}"

  # The switch: an existing Redis (var.redis_url) or ElastiCache created here. Whether a URL was given
  # is not secret; the URL is.
  external_redis = nonsensitive(var.redis_url != "")
  redis_port = local.external_redis ? tonumber(nonsensitive(
    try(regex("^rediss?(?:\\+cluster)?://(?:[^@/]*@)?(?:\\[[^]]+\\]|[^:/]+):(\\d+)", var.redis_url)[0], "6379")
  )) : 6379

  # rediss://: in-transit encryption is on; the AUTH token goes in the password part of the URL.
  # Cluster mode: rediss+cluster:// at the configuration endpoint (the client finds the shards).
  redis_url = local.external_redis ? var.redis_url : (var.redis_cluster_mode ? format(
    "rediss+cluster://:%s@%s:%d",
    var.redis_auth_token,
    aws_elasticache_replication_group.control[0].configuration_endpoint_address,
    aws_elasticache_replication_group.control[0].port,
    ) : format(
    "rediss://:%s@%s:%d/0",
    var.redis_auth_token,
    aws_elasticache_replication_group.control[0].primary_endpoint_address,
    aws_elasticache_replication_group.control[0].port,
  ))

  # CloudWatch: what every relay publishes (relay_node/control/aws/metrics.py) and what autoscaling tracks.
  metrics_namespace      = "Polysocket"
  metrics_dimension_name = "ServiceName"
}
