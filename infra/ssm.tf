# Read by the relays at boot (redis-url) and by serverless.yml at deploy time
# (redis-url, lambda-subnet-ids, lambda-security-group-ids): Terraform stays the only owner of the
# network and of the control plane's address and secret.

resource "aws_ssm_parameter" "redis_url" {
  name        = "${local.ssm_prefix}/redis-url"
  description = "polysocket control plane URL (rediss://:TOKEN@host:port/0)"
  type        = "SecureString"
  value       = local.redis_url
}

resource "aws_ssm_parameter" "lambda_subnet_ids" {
  name  = "${local.ssm_prefix}/lambda-subnet-ids"
  type  = "StringList"
  value = join(",", aws_subnet.private[*].id)
}

resource "aws_ssm_parameter" "lambda_security_group_ids" {
  name  = "${local.ssm_prefix}/lambda-security-group-ids"
  type  = "StringList"
  value = aws_security_group.lambda.id
}
