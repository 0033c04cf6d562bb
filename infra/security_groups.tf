# Relays: HTTP from browsers; anything out (WebSocket targets anywhere, Redis, Route 53, CloudWatch).
resource "aws_security_group" "relay" {
  name        = "${local.name}-relay"
  description = "polysocket relay nodes: client HTTP in, targets and control plane out"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-relay" }
}

resource "aws_vpc_security_group_ingress_rule" "relay_http" {
  for_each = toset(var.relay_ingress_cidrs)

  security_group_id = aws_security_group.relay.id
  description       = "client send/poll/close"
  ip_protocol       = "tcp"
  from_port         = var.relay_port
  to_port           = var.relay_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "relay_all" {
  security_group_id = aws_security_group.relay.id
  description       = "WebSocket targets, Redis, AWS APIs, package install at boot"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# Router Lambda: only talks to Redis.
resource "aws_security_group" "lambda" {
  name        = "${local.name}-router-lambda"
  description = "polysocket router Lambda: Redis only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-router-lambda" }
}

resource "aws_vpc_security_group_egress_rule" "lambda_to_redis" {
  security_group_id            = aws_security_group.lambda.id
  description                  = "control plane"
  ip_protocol                  = "tcp"
  from_port                    = aws_elasticache_replication_group.control.port
  to_port                      = aws_elasticache_replication_group.control.port
  referenced_security_group_id = aws_security_group.redis.id
}

# Control plane: reachable from relays and the router Lambda only.
resource "aws_security_group" "redis" {
  name        = "${local.name}-redis"
  description = "polysocket control plane (ElastiCache)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-redis" }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from" {
  for_each = {
    relay  = aws_security_group.relay.id
    lambda = aws_security_group.lambda.id
  }

  security_group_id            = aws_security_group.redis.id
  description                  = "from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}
