# The relay fleet: an EC2 Auto Scaling group, one relay process per instance, each instance in a
# public subnet with its own public IPv4 address. There is no load balancer in front: a client is
# sent by the router to one particular node ({uniq}.{node}.{relay_domain}) and must keep talking
# to that node, so every node is individually addressable. Each instance registers its own
# Route 53 records at boot (templates/relay-user-data.sh.tftpl); see README.md.

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.relay_architecture}"
}

resource "aws_launch_template" "relay" {
  name_prefix            = "${local.name}-relay-"
  image_id               = data.aws_ssm_parameter.al2023.insecure_value
  instance_type          = var.relay_instance_type
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.relay.arn
  }

  network_interfaces {
    associate_public_ip_address = true
    delete_on_termination       = true
    security_groups             = [aws_security_group.relay.id]
  }

  # IMDSv2 only, one hop: a WebSocket handshake (a plain GET) cannot fetch instance credentials
  # even if a target address slipped past the router's SSRF guard.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  monitoring {
    enabled = true # 1-minute EC2 metrics for the CPU target-tracking policy
  }

  user_data = base64encode(templatefile("${path.module}/templates/relay-user-data.sh.tftpl", {
    region          = var.region
    zone_id         = var.route53_zone_id
    relay_domain    = var.relay_domain
    dns_ttl         = var.relay_dns_ttl
    redis_url_param = aws_ssm_parameter.redis_url.name
    wheel_uri       = var.relay_wheel_s3_uri
    port            = var.relay_port
    capacity        = var.relay_capacity
    drain_grace     = var.relay_drain_grace
    asg_name        = local.asg_name
    namespace       = local.metrics_namespace
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${local.name}-relay" }
  }
}

resource "aws_autoscaling_group" "relays" {
  name                = local.asg_name
  min_size            = var.relay_min_size
  max_size            = var.relay_max_size
  desired_capacity    = var.relay_desired_capacity
  vpc_zone_identifier = aws_subnet.public[*].id

  launch_template {
    id      = aws_launch_template.relay.id
    version = aws_launch_template.relay.latest_version
  }

  health_check_type         = "EC2"
  health_check_grace_period = 300
  default_instance_warmup   = 180
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]

  # A new launch template version (new wheel, new settings) replaces instances a few at a time;
  # each replaced relay drains (clients reconnect through the router).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 90
      instance_warmup        = 180
    }
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-relay"
    propagate_at_launch = true
  }

  lifecycle {
    ignore_changes = [desired_capacity] # owned by the scaling policies after creation
    precondition {
      condition     = var.relay_min_size <= var.relay_desired_capacity && var.relay_desired_capacity <= var.relay_max_size
      error_message = "Need relay_min_size <= relay_desired_capacity <= relay_max_size."
    }
  }
}

# Target tracking on the relays' own load: the average polysocket_open_sockets per instance, which
# every relay publishes each minute as Polysocket/OpenSockets with the ASG name as dimension.
resource "aws_autoscaling_policy" "open_sockets" {
  count = var.scale_on_sockets_target > 0 ? 1 : 0

  name                   = "open-sockets"
  autoscaling_group_name = aws_autoscaling_group.relays.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value     = var.scale_on_sockets_target
    disable_scale_in = !var.scale_in_enabled

    customized_metric_specification {
      namespace   = local.metrics_namespace
      metric_name = "OpenSockets"
      statistic   = "Average"
      unit        = "Count"

      metric_dimension {
        name  = "AutoScalingGroupName"
        value = local.asg_name
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.scale_on_sockets_target < var.relay_capacity
      error_message = "scale_on_sockets_target must be below relay_capacity, or nodes fill up before the fleet grows."
    }
  }
}

# And on CPU: JSON encoding, TLS to targets and many small polls cost CPU before sockets run out.
resource "aws_autoscaling_policy" "cpu" {
  count = var.scale_on_cpu_target > 0 ? 1 : 0

  name                   = "cpu"
  autoscaling_group_name = aws_autoscaling_group.relays.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value     = var.scale_on_cpu_target
    disable_scale_in = !var.scale_in_enabled

    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}
