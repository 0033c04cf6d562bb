# polysocket on AWS: the pieces Terraform owns.
#
#   network.tf          VPC, public subnets (relays: public IPs), private subnets (ElastiCache, router Lambda)
#   security_groups.tf  relay, Redis and Lambda security groups
#   redis.tf            ElastiCache (Valkey by default) replication group: the control plane
#   relays.tf           launch template, Auto Scaling group, target-tracking policies
#   iam.tf              relay instance role: its own Route 53 records, metrics, the wheel, the Redis URL
#   ssm.tf              SSM parameters read by relays at boot and by serverless.yml at deploy
#   templates/          the relay's boot script (DNS registration, systemd units, metric publisher)
#
# The router Lambda and its HTTP API are deployed by serverless.yml, not here.

data "aws_availability_zones" "available" {
  state = "available"
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name     = "polysocket-${var.stage}"
  asg_name = "polysocket-${var.stage}-relays"
  azs      = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  ssm_prefix = "/polysocket/${var.stage}"

  # rediss://: in-transit encryption is on; the AUTH token goes in the password part of the URL.
  redis_url = format(
    "rediss://:%s@%s:%d/0",
    var.redis_auth_token,
    aws_elasticache_replication_group.control.primary_endpoint_address,
    aws_elasticache_replication_group.control.port,
  )

  metrics_namespace = "Polysocket"
}
