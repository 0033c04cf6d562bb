# The relay fleet: ECS on Fargate, one relay container per task, each task in a public subnet with its
# own public IPv4 address (awsvpc networking). There is no load balancer in front: the router sends a
# client to one particular node ({uniq}.{node}.{relay_domain}) and the client keeps talking to that
# node, so every node is addressable on its own. Each relay registers its own Route 53 records before
# it takes sockets and removes them after it has drained (relay_node/control/aws/). Why Fargate and not an EC2
# Auto Scaling group running the container: docs/deploy.md.

resource "aws_ecr_repository" "relay" {
  name                 = "${local.name}-relay"
  image_tag_mutability = "IMMUTABLE" # a tag names one image for ever: task definitions stay reproducible
  force_delete         = false

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS" # the AWS-managed key aws/ecr
  }
}

resource "aws_ecs_cluster" "relays" {
  name = local.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "relay" {
  # checkov:skip=CKV_AWS_158:encrypted by CloudWatch Logs' own key; relay logs carry no secrets (relay_node/edge/logsafe.py bounds and strips them)
  # checkov:skip=CKV_AWS_338:retention is relay_log_retention_days (30 by default), a cost decision left to the operator
  name              = "/polysocket/${var.stage}/relay"
  retention_in_days = var.relay_log_retention_days
}

locals {
  relay_image = var.relay_image != "" ? var.relay_image : "${aws_ecr_repository.relay.repository_url}:${var.relay_image_tag}"

  # SIGTERM starts the drain (serve for the grace period, close with 1001, deregister, remove the DNS
  # records); ECS sends SIGKILL stopTimeout seconds later. Measured: a relay with a live socket exits
  # about grace + 2 s after SIGTERM (tests/stack/test_deploy_artifacts.py); 30 s covers closing handshakes,
  # the 5 s graceful close of answers in progress and a slow Route 53 DELETE.
  relay_stop_timeout = min(var.relay_drain_grace + 30, 120)

  # A deployment starts the new tasks before it stops old ones: up to twice the desired count.
  deployment_maximum_percent = 200

  # The relay's settings (`polysocket relay --help`; every flag is a POLYSOCKET_* variable). The image
  # sets POLYSOCKET_HOST=0.0.0.0. tests/stack/test_deploy_artifacts.py checks every name here is a setting.
  relay_environment = merge({
    POLYSOCKET_PORT                       = tostring(local.relay_port)
    POLYSOCKET_CAPACITY                   = tostring(var.relay_capacity)
    POLYSOCKET_DRAIN_GRACE                = tostring(var.relay_drain_grace)
    POLYSOCKET_ROUTE53_ZONE_ID            = var.route53_zone_id
    POLYSOCKET_ROUTE53_TTL                = tostring(var.relay_dns_ttl)
    POLYSOCKET_CLOUDWATCH_NAMESPACE       = local.metrics_namespace
    POLYSOCKET_CLOUDWATCH_INTERVAL        = tostring(var.relay_metric_interval)
    POLYSOCKET_CLOUDWATCH_DIMENSION_NAME  = local.metrics_dimension_name
    POLYSOCKET_CLOUDWATCH_DIMENSION_VALUE = local.relay_service_name
    AWS_DEFAULT_REGION                    = var.region
  }, local.slot_mode ? local.relay_slot_environment : local.relay_task_name_environment, var.relay_environment)

  # HTTPS (tls.tf): the relay leases a slot name under its relay domain (with the public port unless
  # 443) and serves the slot's certificate, from the secrets tls.tf creates or ordered by ACME.
  relay_slot_environment = {
    POLYSOCKET_RELAY_DOMAIN   = local.relay_public_domain
    POLYSOCKET_SLOT_COUNT     = tostring(var.relay_slot_count)
    POLYSOCKET_ACME_DIRECTORY = var.acme_directory
    POLYSOCKET_ACME_EMAIL     = var.acme_email
    POLYSOCKET_CERT_STORE     = "secretsmanager"
    POLYSOCKET_CERT_PREFIX    = local.cert_prefix
  }
  # Plain HTTP: RELAY_DOMAIN is read by the image's entrypoint, which names the node
  # {ecs-task-id}.{relay_domain} (deploy/relay/entrypoint.py).
  relay_task_name_environment = {
    RELAY_DOMAIN = var.relay_domain
  }

  # Secrets: ECS reads them from SSM with the execution role when it starts the task; they reach the
  # container as environment variables and never appear in the task definition.
  relay_secrets = {
    POLYSOCKET_REDIS_URL     = aws_ssm_parameter.redis_url.arn
    POLYSOCKET_METRICS_TOKEN = aws_ssm_parameter.metrics_token.arn
  }
}

# The memory sizes Fargate pairs with each CPU size a relay may have (var.relay_cpu)
locals {
  fargate_memory_for_cpu = {
    "256"  = [512, 1024, 2048]
    "512"  = [1024, 2048, 3072, 4096]
    "1024" = [2048, 3072, 4096, 5120, 6144, 7168, 8192]
  }
}

resource "aws_ecs_task_definition" "relay" {
  family                   = "${local.name}-relay"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.relay_cpu
  memory                   = var.relay_memory
  execution_role_arn       = aws_iam_role.relay_execution.arn
  task_role_arn            = aws_iam_role.relay_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.relay_architecture
  }

  # The root file system is read-only; these two are the only writable places (task-local storage). The
  # image declares both as VOLUMEs, so ECS copies their owner and mode (else: root-owned, 0755).
  volume {
    name = "tmp"
  }
  volume {
    name = "state"
  }

  container_definitions = jsonencode([{
    name      = "relay"
    image     = local.relay_image
    essential = true
    user      = "10001:10001" # the image's user, stated again so the platform refuses a root override

    portMappings = [{ containerPort = local.relay_port, protocol = "tcp" }]
    environment  = [for k in sort(keys(local.relay_environment)) : { name = k, value = local.relay_environment[k] }]
    secrets      = [for k in sort(keys(local.relay_secrets)) : { name = k, valueFrom = local.relay_secrets[k] }]

    ulimits     = [{ name = "nofile", softLimit = var.relay_nofile, hardLimit = var.relay_nofile }]
    stopTimeout = local.relay_stop_timeout
    # A non-root process may bind ports below 1024 in this task's network namespace only (Fargate
    # accepts namespaced net.* sysctls in awsvpc mode; no capability is added, all stay dropped).
    systemControls = local.relay_port < 1024 ? [{ namespace = "net.ipv4.ip_unprivileged_port_start", value = tostring(local.relay_port) }] : []
    linuxParameters = {
      initProcessEnabled = true # an init as PID 1 passes SIGTERM on and reaps
      capabilities       = { drop = ["ALL"] }
    }
    readonlyRootFilesystem = true
    mountPoints = [
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      { sourceVolume = "state", containerPath = "/var/lib/polysocket", readOnly = false },
    ]

    # the image's HEALTHCHECK, stated here because ECS ignores the image's
    healthCheck = {
      command  = ["CMD", "/usr/local/bin/polysocket-relay-healthcheck"]
      interval = 15
      timeout  = 5
      retries  = 3
      # a relay listens once it has its slot's certificate: the first start of a slot orders one
      # (DNS-01 waits for Route 53 INSYNC and the CA's lookups); 300 s is ECS's most
      startPeriod = local.slot_mode ? 300 : 60
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.relay.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "relay"
      }
    }
  }])

  lifecycle {
    precondition {
      condition     = contains(lookup(local.fargate_memory_for_cpu, tostring(var.relay_cpu), []), var.relay_memory)
      error_message = "relay_memory ${var.relay_memory} is not a size Fargate pairs with relay_cpu ${var.relay_cpu}: choose one of ${jsonencode(lookup(local.fargate_memory_for_cpu, tostring(var.relay_cpu), []))} (MiB)."
    }
  }
}

resource "aws_ecs_service" "relays" {
  name             = local.relay_service_name
  cluster          = aws_ecs_cluster.relays.id
  task_definition  = aws_ecs_task_definition.relay.arn
  desired_count    = var.relay_desired_capacity
  launch_type      = "FARGATE"
  platform_version = "LATEST" # 1.4.0 or later: systemControls and ulimits need it

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  # A new image or setting: start the new tasks first (each registers its name), then stop old ones
  # (each drains; its clients reconnect through the router). A deployment whose tasks keep failing
  # their health check is rolled back.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = local.deployment_maximum_percent
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    # checkov:skip=CKV_AWS_333:each relay is reached by browsers at its own public address (no load balancer can route to one chosen task)
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.relay.id]
    assign_public_ip = true
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by the autoscaling policies after creation
    precondition {
      condition     = var.relay_min_size <= var.relay_desired_capacity && var.relay_desired_capacity <= var.relay_max_size
      error_message = "Need relay_min_size <= relay_desired_capacity <= relay_max_size."
    }
    # Every running relay holds a slot, old and new ones side by side during a deployment; a relay
    # that finds none free fails its start (NoFreeSlot) and the deployment rolls back.
    precondition {
      condition     = !local.slot_mode || var.relay_slot_count >= local.deployment_max_tasks
      error_message = "relay_slot_count must be at least relay_max_size * ${local.deployment_maximum_percent} / 100 = ${local.deployment_max_tasks}: every relay holds a slot, old and new tasks together during a deployment."
    }
  }
}
