resource "aws_elasticache_subnet_group" "control" {
  name       = "${local.name}-control"
  subnet_ids = aws_subnet.private[*].id
}

# The control plane. Cluster mode stays disabled: the router's node-selection Lua script reads
# every node's keys in one call, which Redis Cluster would refuse across hash slots.
resource "aws_elasticache_replication_group" "control" {
  replication_group_id = "${local.name}-control"
  description          = "polysocket control plane: relay registry, establish inboxes and replies"

  engine               = var.redis_engine
  engine_version       = var.redis_engine_version
  node_type            = var.redis_node_type
  port                 = 6379
  parameter_group_name = "default.${var.redis_engine}${split(".", var.redis_engine_version)[0]}"

  num_cache_clusters         = 1 + var.redis_replicas
  automatic_failover_enabled = var.redis_replicas > 0
  multi_az_enabled           = var.redis_replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.control.name
  security_group_ids = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = var.redis_auth_token

  snapshot_retention_limit = 0 # nothing in it outlives the nodes that wrote it
  apply_immediately        = true
}
