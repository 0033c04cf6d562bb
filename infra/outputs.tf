output "vpc_id" {
  description = "The polysocket VPC."
  value       = aws_vpc.main.id
}

output "lambda_subnet_ids" {
  description = "Private subnets for the router Lambda (also in SSM: lambda-subnet-ids)."
  value       = aws_subnet.private[*].id
}

output "lambda_security_group_id" {
  description = "Security group for the router Lambda (also in SSM: lambda-security-group-ids)."
  value       = aws_security_group.lambda.id
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the control plane (TLS on, AUTH required)."
  value       = aws_elasticache_replication_group.control.primary_endpoint_address
}

output "ssm_parameters" {
  description = "SSM parameters that serverless.yml reads for the same stage."
  value = {
    redis_url                 = aws_ssm_parameter.redis_url.name
    lambda_subnet_ids         = aws_ssm_parameter.lambda_subnet_ids.name
    lambda_security_group_ids = aws_ssm_parameter.lambda_security_group_ids.name
  }
}

output "relay_asg_name" {
  description = "Auto Scaling group of the relay fleet."
  value       = aws_autoscaling_group.relays.name
}

output "relay_role_arn" {
  description = "IAM role of relay instances."
  value       = aws_iam_role.relay.arn
}

output "relay_name_pattern" {
  description = "Names a relay node answers on; {node} is its EC2 instance id."
  value       = "{node}.${var.relay_domain} and *.{node}.${var.relay_domain}"
}
