# `terraform test` with a mocked AWS provider: plans (and mock-applies) the whole configuration without an AWS
# account or network, so expressions, the rendered task definition, validations and preconditions are
# evaluated. Run by ./validate.sh. Mocked values are placeholders, not AWS behaviour (the real apply
# against emulators is tests/cloud/test_terraform_apply.py).

mock_provider "aws" {
  mock_data "aws_availability_zones" {
    defaults = {
      names = ["us-east-1a", "us-east-1b", "us-east-1c"]
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{}"
    }
  }
  # The provider validates ARNs it is given; the mock's random strings are not ARNs.
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/polysocket-prod-relay"
    }
  }
  mock_resource "aws_ssm_parameter" {
    defaults = {
      arn = "arn:aws:ssm:us-east-1:123456789012:parameter/polysocket/prod/x"
    }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:us-east-1:123456789012:log-group:/polysocket/prod/relay"
    }
  }
  mock_resource "aws_ecr_repository" {
    defaults = {
      repository_url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/polysocket-prod-relay"
    }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = {
      arn = "arn:aws:ecs:us-east-1:123456789012:cluster/polysocket-prod"
    }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = {
      arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/polysocket-prod-relay:1"
    }
  }
  mock_resource "aws_elasticache_replication_group" {
    defaults = {
      primary_endpoint_address = "master.polysocket-prod-control.abc123.use1.cache.amazonaws.com"
      port                     = 6379
    }
  }
}

variables {
  route53_zone_id     = "Z0123456789EXAMPLE"
  relay_domain        = "relay.example.com"
  redis_auth_token    = "0123456789abcdef0123456789abcdef"
  relay_metrics_token = "m3tr1cs-0123456789abcdef"
}

run "applies_with_elasticache" {
  # apply against the mock: computed attributes (endpoint, ids) get the mocked values.
  command = apply

  assert {
    condition     = length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "one public and one private subnet per AZ"
  }
  assert {
    condition     = length(aws_elasticache_replication_group.control) == 1 && length(aws_nat_gateway.main) == 0
    error_message = "ElastiCache without an external URL, and then no NAT gateway"
  }
  assert {
    condition     = aws_elasticache_replication_group.control[0].parameter_group_name == "default.valkey8"
    error_message = "parameter group follows engine and major version"
  }
  assert {
    condition     = aws_ssm_parameter.redis_url.value == "rediss://:0123456789abcdef0123456789abcdef@master.polysocket-prod-control.abc123.use1.cache.amazonaws.com:6379/0"
    error_message = "redis URL"
  }
  assert {
    condition     = aws_ssm_parameter.metrics_token.type == "SecureString" && aws_ssm_parameter.metrics_token.value == "m3tr1cs-0123456789abcdef"
    error_message = "the metrics token is a SecureString"
  }
  assert {
    condition     = aws_ecs_service.relays.name == "polysocket-prod-relays" && aws_ecs_service.relays.network_configuration[0].assign_public_ip
    error_message = "the relay service: its name is the metric dimension; every task has a public address"
  }
  assert {
    condition     = local.relay_environment["POLYSOCKET_CLOUDWATCH_DIMENSION_VALUE"] == aws_ecs_service.relays.name && local.relay_environment["POLYSOCKET_CLOUDWATCH_DIMENSION_NAME"] == "ServiceName"
    error_message = "relays publish under the dimension the scaling policy tracks"
  }
  assert {
    condition     = one(aws_appautoscaling_policy.utilization[0].target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].dimensions).value == aws_ecs_service.relays.name
    error_message = "the policy tracks the service's own datapoints"
  }
  assert {
    condition     = aws_appautoscaling_target.relays.resource_id == "service/polysocket-prod/polysocket-prod-relays" && aws_appautoscaling_target.relays.max_capacity == 10
    error_message = "scalable target"
  }
  assert {
    condition     = length(aws_appautoscaling_policy.utilization) == 1 && length(aws_appautoscaling_policy.cpu) == 1
    error_message = "both target-tracking policies"
  }
  assert {
    condition     = aws_appautoscaling_policy.utilization[0].target_tracking_scaling_policy_configuration[0].scale_in_cooldown > local.relay_stop_timeout
    error_message = "scale-in waits longer than a whole drain"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].stopTimeout == 40
    error_message = "stopTimeout = drain grace (10) + 30"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].image == "123456789012.dkr.ecr.us-east-1.amazonaws.com/polysocket-prod-relay:0.1.0"
    error_message = "the image from the ECR repository at relay_image_tag"
  }
  assert {
    condition     = local.relay_image_repository_arns == ["arn:aws:ecr:us-east-1:123456789012:repository/polysocket-prod-relay"]
    error_message = "the execution role may pull from that repository only"
  }
  assert {
    condition     = [for s in jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].secrets : s.name] == ["POLYSOCKET_METRICS_TOKEN", "POLYSOCKET_REDIS_URL"]
    error_message = "the Redis URL and the metrics token reach the container as secrets"
  }
  assert {
    condition     = !strcontains(aws_ecs_task_definition.relay.container_definitions, "0123456789abcdef0123456789abcdef") && !strcontains(aws_ecs_task_definition.relay.container_definitions, "m3tr1cs")
    error_message = "no secret in the task definition"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].ulimits[0].softLimit == 1048576
    error_message = "file-descriptor limit"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].systemControls == [{ namespace = "net.ipv4.ip_unprivileged_port_start", value = "443" }]
    error_message = "port 443 as non-root: unprivileged ports start at 443, no lower"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].portMappings == [{ containerPort = 443, protocol = "tcp" }] && aws_vpc_security_group_ingress_rule.relay_clients["0.0.0.0/0"].from_port == 443
    error_message = "HTTPS by default: relays on 443, open to clients there"
  }
  assert {
    condition     = { for e in jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].environment : e.name => e.value if startswith(e.name, "POLYSOCKET_") && !startswith(e.name, "POLYSOCKET_CLOUDWATCH_") && !startswith(e.name, "POLYSOCKET_ROUTE53_") } == { POLYSOCKET_PORT = "443", POLYSOCKET_CAPACITY = "10000", POLYSOCKET_DRAIN_GRACE = "10", POLYSOCKET_RELAY_DOMAIN = "relay.example.com", POLYSOCKET_SLOT_COUNT = "20", POLYSOCKET_ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory", POLYSOCKET_ACME_EMAIL = "", POLYSOCKET_CERT_STORE = "secretsmanager", POLYSOCKET_CERT_PREFIX = "polysocket/prod/" }
    error_message = "slot mode: the relay leases sNN.relay.example.com (443: no port in the name) and serves the slot's certificate from Secrets Manager"
  }
  assert {
    condition     = !contains([for e in jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].environment : e.name], "RELAY_DOMAIN")
    error_message = "no task-id name in slot mode (the entrypoint would set an fqdn the slot replaces)"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].healthCheck.startPeriod == 300
    error_message = "a first start orders a certificate: the longest start period ECS allows"
  }
  assert {
    condition     = length(local.slot_hosts) == 20 && local.slot_hosts[0] == "s00.relay.example.com" && local.slot_hosts[19] == "s19.relay.example.com"
    error_message = "20 slots by default, two digits"
  }
  assert {
    condition     = slice(local.slot_record_names, 0, 4) == ["s00.relay.example.com", "\\052.s00.relay.example.com", "s01.relay.example.com", "\\052.s01.relay.example.com"] && length(local.slot_record_names) == 40
    error_message = "IAM names each slot's A records, the wildcard in Route 53's normalized form (\\052)"
  }
  assert {
    condition     = local.acme_challenge_names[0] == "_acme-challenge.s00.relay.example.com" && length(local.acme_challenge_names) == 20
    error_message = "and each slot's DNS-01 TXT record"
  }
  assert {
    condition     = length(aws_secretsmanager_secret.slot_cert) == 20 && aws_secretsmanager_secret.slot_cert["s07.relay.example.com"].name == "polysocket/prod/cert/s07.relay.example.com"
    error_message = "one secret per slot certificate, named as relay_node/control/aws/certstore.py names it"
  }
  assert {
    condition     = aws_secretsmanager_secret.acme_account[0].name == "polysocket/prod/acme-account/acme-v02.api.letsencrypt.org/directory"
    error_message = "the ACME account key's secret, named after the directory without its scheme"
  }
  assert {
    condition     = length(aws_kms_key.certs) == 1 && aws_kms_key.certs[0].enable_key_rotation && aws_secretsmanager_secret.acme_account[0].kms_key_id == aws_kms_key.certs[0].arn
    error_message = "the store is encrypted with the fleet's own key"
  }
}

run "plain_http_for_a_private_network" {
  command = plan

  variables {
    relay_plain_http = true
  }

  assert {
    condition     = local.relay_environment["RELAY_DOMAIN"] == "relay.example.com" && !contains(keys(local.relay_environment), "POLYSOCKET_RELAY_DOMAIN") && local.relay_environment["POLYSOCKET_PORT"] == "80"
    error_message = "plain HTTP: port 80, nodes named after their task by the entrypoint"
  }
  assert {
    condition     = length(aws_secretsmanager_secret.slot_cert) == 0 && length(aws_secretsmanager_secret.acme_account) == 0 && length(aws_kms_key.certs) == 0 && length(local.slot_record_names) == 0
    error_message = "no certificate store, no slot names"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].systemControls[0].value == "80" && jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].healthCheck.startPeriod == 60
    error_message = "port 80 as non-root; no certificate to wait for"
  }
}

run "many_slots_take_three_digits" {
  command = plan

  variables {
    relay_slot_count = 101
    relay_max_size   = 50
    acme_directory   = "https://127.0.0.1:14000/dir/"
  }

  assert {
    condition     = local.slot_hosts[0] == "s000.relay.example.com" && local.slot_hosts[100] == "s100.relay.example.com"
    error_message = "s000 ... s100 past 100 slots (slots.py slot_names)"
  }
  assert {
    condition     = local.acme_account_secret_name == "polysocket/prod/acme-account/127.0.0.1-14000/dir"
    error_message = "a character a secret name cannot hold becomes -; no trailing slash"
  }
}

run "refuses_fewer_slots_than_a_deployment_runs" {
  command = plan

  variables {
    relay_slot_count = 19 # relay_max_size 10: a deployment runs up to 20 tasks
  }

  expect_failures = [aws_ecs_service.relays]
}

run "refuses_more_than_one_vcpu_per_relay" {
  command = plan

  variables {
    relay_cpu    = 2048 # a relay uses one core: the CPU policy would see at most 50 %
    relay_memory = 4096
  }

  expect_failures = [var.relay_cpu]
}

run "refuses_a_memory_size_fargate_does_not_pair_with_the_cpu" {
  command = plan

  variables {
    relay_cpu    = 1024
    relay_memory = 1024 # 1 vCPU takes 2048 to 8192
  }

  expect_failures = [aws_ecs_task_definition.relay]
}

run "takes_a_smaller_relay_task" {
  command = plan

  variables {
    relay_cpu    = 512
    relay_memory = 1024
  }

  assert {
    condition     = aws_ecs_task_definition.relay.cpu == "512" && aws_ecs_task_definition.relay.memory == "1024"
    error_message = "a half-vCPU task with 1 GiB is a Fargate size"
  }
}

run "refuses_a_slot_count_the_relay_refuses" {
  command = plan

  variables {
    relay_slot_count = 1001
  }

  expect_failures = [var.relay_slot_count]
}

run "uses_an_existing_redis" {
  command = apply

  variables {
    redis_auth_token = ""
    redis_url        = "rediss://default:s3cr3t@eu1-adapted-frog-12345.upstash.io:6380"
  }

  assert {
    condition     = length(aws_elasticache_replication_group.control) == 0 && length(aws_security_group.redis) == 0
    error_message = "no ElastiCache with an external Redis"
  }
  assert {
    condition     = aws_ssm_parameter.redis_url.value == "rediss://default:s3cr3t@eu1-adapted-frog-12345.upstash.io:6380"
    error_message = "the given URL goes to SSM as it is"
  }
  assert {
    condition     = length(aws_nat_gateway.main) == 1 && length(aws_route_table.private.route) == 1
    error_message = "the router Lambda reaches the external Redis through a NAT gateway"
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.lambda_to_redis.from_port == 6380 && aws_vpc_security_group_egress_rule.lambda_to_redis.cidr_ipv4 == "0.0.0.0/0"
    error_message = "Lambda egress to the external Redis' port"
  }
  assert {
    condition     = output.control_plane == "external"
    error_message = "output"
  }
}

run "image_from_another_registry_on_443" {
  command = plan

  variables {
    relay_image       = "ghcr.io/example/polysocket-relay:0.1.0"
    relay_port        = 8443
    relay_drain_grace = 90
  }

  assert {
    condition     = local.relay_environment["POLYSOCKET_RELAY_DOMAIN"] == "relay.example.com:8443"
    error_message = "a public port other than 443 is part of the slot names clients use"
  }

  assert {
    condition     = local.relay_image_repository_arns == [] && local.relay_image == "ghcr.io/example/polysocket-relay:0.1.0"
    error_message = "no ECR pull permission for an image from elsewhere"
  }
  assert {
    condition     = length(jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].systemControls) == 0
    error_message = "no sysctl above port 1024"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.relay.container_definitions)[0].stopTimeout == 120
    error_message = "Fargate's most: 120 s"
  }
}

run "refuses_a_grace_fargate_cannot_wait_for" {
  command = plan

  variables {
    relay_drain_grace = 100
  }

  expect_failures = [var.relay_drain_grace]
}

run "refuses_an_image_without_tag" {
  command = plan

  variables {
    relay_image = "ghcr.io/example/polysocket-relay"
  }

  expect_failures = [var.relay_image]
}

run "refuses_elasticache_without_a_token" {
  command = plan

  variables {
    redis_auth_token = ""
  }

  expect_failures = [aws_elasticache_replication_group.control]
}

run "refuses_an_auth_token_that_breaks_the_url" {
  command = plan

  variables {
    redis_auth_token = "abc@def/ghi#jkl0123456"
  }

  expect_failures = [var.redis_auth_token]
}

run "redis_engine_and_version" {
  command = plan

  variables {
    redis_engine         = "redis"
    redis_engine_version = "7.1"
    redis_replicas       = 0
  }

  assert {
    condition     = aws_elasticache_replication_group.control[0].parameter_group_name == "default.redis7"
    error_message = "redis 7 parameter group"
  }
  assert {
    condition     = aws_elasticache_replication_group.control[0].automatic_failover_enabled == false
    error_message = "no failover without replicas"
  }
}

run "cluster_mode_for_elasticache" {
  command = apply

  variables {
    redis_cluster_mode = true
    redis_shards       = 3
    redis_replicas     = 1
  }

  assert {
    condition     = aws_elasticache_replication_group.control[0].cluster_mode == "enabled" && aws_elasticache_replication_group.control[0].num_node_groups == 3 && aws_elasticache_replication_group.control[0].replicas_per_node_group == 1
    error_message = "three shards of a primary and a replica"
  }
  assert {
    condition     = aws_elasticache_replication_group.control[0].parameter_group_name == "default.valkey8.cluster.on" && aws_elasticache_replication_group.control[0].automatic_failover_enabled
    error_message = "the cluster-mode parameter group, failover on"
  }
  assert {
    condition     = startswith(nonsensitive(aws_ssm_parameter.redis_url.value), "rediss+cluster://:")
    error_message = "the services get a cluster URL (at the configuration endpoint)"
  }
}

run "refuses_shards_without_cluster_mode" {
  command = plan

  variables {
    redis_shards = 2
  }

  expect_failures = [var.redis_shards]
}

run "accepts_an_external_cluster_url" {
  command = plan

  variables {
    redis_auth_token = ""
    redis_url        = "rediss+cluster://default:s3cr3t@clustercfg.example.com:6380"
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.lambda_to_redis.from_port == 6380
    error_message = "the port of a cluster URL"
  }
}
