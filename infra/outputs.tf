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

output "control_plane" {
  description = "elasticache (created here) or external (redis_url)."
  value       = local.external_redis ? "external" : "elasticache"
}

output "redis_primary_endpoint" {
  description = "Primary endpoint of the ElastiCache control plane (TLS on, AUTH required); null with an external Redis."
  value       = local.external_redis ? null : aws_elasticache_replication_group.control[0].primary_endpoint_address
}

output "ssm_parameters" {
  description = "SSM parameters: serverless.yml reads the first three for the same stage; scrapers of /metrics read metrics_token."
  value = {
    redis_url                 = aws_ssm_parameter.redis_url.name
    lambda_subnet_ids         = aws_ssm_parameter.lambda_subnet_ids.name
    lambda_security_group_ids = aws_ssm_parameter.lambda_security_group_ids.name
    metrics_token             = aws_ssm_parameter.metrics_token.name
  }
}

output "relay_image" {
  description = "The image the relay tasks run."
  value       = local.relay_image
}

output "relay_ecr_repository_url" {
  description = "Push the relay image here (docker push URL:TAG), then set relay_image_tag."
  value       = aws_ecr_repository.relay.repository_url
}

output "relay_cluster_name" {
  description = "ECS cluster of the relay fleet."
  value       = aws_ecs_cluster.relays.name
}

output "relay_service_name" {
  description = "ECS service of the relay fleet (also the ServiceName dimension of its metrics)."
  value       = aws_ecs_service.relays.name
}

output "relay_task_role_arn" {
  description = "IAM role of the relay processes."
  value       = aws_iam_role.relay_task.arn
}

output "relay_stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before it kills a relay task (drain grace + 30 s, at most 120)."
  value       = local.relay_stop_timeout
}

output "relay_name_pattern" {
  description = "Names a relay node answers on: with HTTPS {slot} is the slot it leases (s00 ...), with plain HTTP {node} is its ECS task id."
  value       = local.slot_mode ? "{slot}.${var.relay_domain} and *.{slot}.${var.relay_domain}" : "{node}.${var.relay_domain} and *.{node}.${var.relay_domain}"
}

output "relay_scheme" {
  description = "https (slot names with certificates) or http (relay_plain_http)."
  value       = local.slot_mode ? "https" : "http"
}

output "relay_slot_hosts" {
  description = "The slot names, one certificate each (empty with plain HTTP)."
  value       = local.slot_hosts
}

output "relay_certificate_store" {
  description = "Secrets Manager secrets of the slot certificates and of the ACME account key, and their KMS key (null with plain HTTP)."
  value = local.slot_mode ? {
    slot_certificates = { for h, s in aws_secretsmanager_secret.slot_cert : h => s.name }
    acme_account      = aws_secretsmanager_secret.acme_account[0].name
    kms_key_arn       = aws_kms_key.certs[0].arn
  } : null
}

output "metrics" {
  description = "What the relays publish and the scaling policy tracks."
  value = {
    namespace = local.metrics_namespace
    metrics   = ["OpenSockets", "Utilization"]
    dimension = { (local.metrics_dimension_name) = local.relay_service_name }
  }
}
