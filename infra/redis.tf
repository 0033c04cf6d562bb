# The control plane, unless var.redis_url names an existing Redis / Valkey (then nothing here is created).

resource "aws_elasticache_subnet_group" "control" {
  count = local.external_redis ? 0 : 1

  name       = "${local.name}-control"
  subnet_ids = aws_subnet.private[*].id
}

# Cluster mode (var.redis_cluster_mode) splits the keys over var.redis_shards primaries: every script
# and transaction of the control plane touches one hash tag, so one slot (docs/protocol.md); the
# services then reach it through the configuration endpoint with a rediss+cluster:// URL (main.tf).
# docs/scale.md says when one primary stops being enough.
resource "aws_elasticache_replication_group" "control" {
  count = local.external_redis ? 0 : 1

  # checkov:skip=CKV2_AWS_50:Multi-AZ automatic failover is on whenever redis_replicas > 0 (the default 1); 0 is a deliberate cheap setting
  replication_group_id = "${local.name}-control"
  description          = "polysocket control plane: relay registry, establish inboxes and replies"

  engine               = var.redis_engine
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = "default.${var.redis_engine}${split(".", var.redis_engine_version)[0]}${var.redis_cluster_mode ? ".cluster.on" : ""}"

  # Without cluster mode: one primary and its replicas. With it: shards of a primary and replicas
  # each, and automatic failover on (ElastiCache requires it for cluster mode).
  cluster_mode               = var.redis_cluster_mode ? "enabled" : "disabled"
  num_cache_clusters         = var.redis_cluster_mode ? null : 1 + var.redis_replicas
  num_node_groups            = var.redis_cluster_mode ? var.redis_shards : null
  replicas_per_node_group    = var.redis_cluster_mode ? var.redis_replicas : null
  automatic_failover_enabled = var.redis_cluster_mode || var.redis_replicas > 0
  multi_az_enabled           = var.redis_replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.control[0].name
  security_group_ids = [aws_security_group.redis[0].id]

  # checkov:skip=CKV_AWS_191:encrypted at rest with the AWS-managed key; a customer key adds cost and key policy for no reader outside this account
  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = var.redis_auth_token

  snapshot_retention_limit = 0 # nothing in it outlives the nodes that wrote it
  apply_immediately        = true

  lifecycle {
    precondition {
      condition     = var.redis_auth_token != ""
      error_message = "Set redis_auth_token (TF_VAR_redis_auth_token) to create ElastiCache, or redis_url to use an existing Redis."
    }
  }
}
