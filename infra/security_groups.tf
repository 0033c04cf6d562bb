# Relays: the clients' HTTP(S) in from browsers; anything out (WebSocket targets anywhere, Redis,
# Route 53, CloudWatch, ECR).
resource "aws_security_group" "relay" {
  name        = "${local.name}-relay"
  description = "polysocket relay tasks: client HTTP in, targets and control plane out"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-relay" }
}

resource "aws_vpc_security_group_ingress_rule" "relay_clients" {
  # checkov:skip=CKV_AWS_260:the relays are public web endpoints: every browser must reach them (relay_ingress_cidrs narrows it)
  for_each = toset(var.relay_ingress_cidrs)

  security_group_id = aws_security_group.relay.id
  description       = "client send/poll/close"
  ip_protocol       = "tcp"
  from_port         = local.relay_port
  to_port           = local.relay_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "relay_all" {
  # checkov:skip=CKV_AWS_382:a relay connects to whatever WebSocket targets its tokens allow, on any port; the router's SSRF guard, not the network, restricts targets
  security_group_id = aws_security_group.relay.id
  description       = "WebSocket targets, Redis, AWS APIs, image pull"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# Router Lambda: only talks to Redis (ElastiCache here, or the external Redis through the NAT gateway).
resource "aws_security_group" "lambda" {
  # checkov:skip=CKV2_AWS_5:attached to the router Lambda by serverless.yml (lambda-security-group-ids in SSM), outside this configuration
  name        = "${local.name}-router-lambda"
  description = "polysocket router Lambda: Redis only"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-router-lambda" }
}

resource "aws_vpc_security_group_egress_rule" "lambda_to_redis" {
  security_group_id            = aws_security_group.lambda.id
  description                  = "control plane"
  ip_protocol                  = "tcp"
  from_port                    = local.redis_port
  to_port                      = local.redis_port
  referenced_security_group_id = local.external_redis ? null : aws_security_group.redis[0].id
  cidr_ipv4                    = local.external_redis ? "0.0.0.0/0" : null
}

# Control plane (ElastiCache only): reachable from relays and the router Lambda only.
resource "aws_security_group" "redis" {
  count = local.external_redis ? 0 : 1

  name        = "${local.name}-redis"
  description = "polysocket control plane (ElastiCache)"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${local.name}-redis" }
}

resource "aws_vpc_security_group_ingress_rule" "redis_from" {
  for_each = local.external_redis ? {} : {
    relay  = aws_security_group.relay.id
    lambda = aws_security_group.lambda.id
  }

  security_group_id            = aws_security_group.redis[0].id
  description                  = "from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}
