# Read by the relays (as ECS secrets: redis-url, metrics-token), by serverless.yml at deploy time
# (redis-url, lambda-subnet-ids, lambda-security-group-ids) and by whatever scrapes the relays'
# /metrics (metrics-token): Terraform stays the only owner of the network and of the control plane's
# address and secrets.
#
# checkov:skip=CKV_AWS_337 below: SecureStrings are encrypted with the AWS-managed key aws/ssm. A customer
# key would have to be granted to the task execution role and to whoever runs `serverless deploy`, for
# no reader outside this account.

resource "aws_ssm_parameter" "redis_url" {
  # checkov:skip=CKV_AWS_337:AWS-managed key (see the top of this file)
  name        = "${local.ssm_prefix}/redis-url"
  description = "polysocket control plane URL (rediss://:TOKEN@host:port/0)"
  type        = "SecureString"
  value       = local.redis_url
}

resource "aws_ssm_parameter" "metrics_token" {
  # checkov:skip=CKV_AWS_337:AWS-managed key (see the top of this file)
  name        = "${local.ssm_prefix}/metrics-token"
  description = "Bearer token for GET /metrics on the relays (POLYSOCKET_METRICS_TOKEN)"
  type        = "SecureString"
  value       = var.relay_metrics_token
}

resource "aws_ssm_parameter" "lambda_subnet_ids" {
  # checkov:skip=CKV2_AWS_34:subnet ids are not secret, and a SecureString cannot be a StringList (serverless.yml reads a list)
  name  = "${local.ssm_prefix}/lambda-subnet-ids"
  type  = "StringList"
  value = join(",", aws_subnet.private[*].id)
}

resource "aws_ssm_parameter" "lambda_security_group_ids" {
  # checkov:skip=CKV2_AWS_34:a security group id is not secret, and a SecureString cannot be a StringList (serverless.yml reads a list)
  name  = "${local.ssm_prefix}/lambda-security-group-ids"
  type  = "StringList"
  value = aws_security_group.lambda.id
}
