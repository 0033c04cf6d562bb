# Two target-tracking policies on the relay service; Application Auto Scaling follows whichever asks
# for more tasks.
#
# Scale-in waits for the drain: lowering the desired count makes ECS send SIGTERM to the tasks it
# removes and wait up to stopTimeout (drain grace + 30 s) before SIGKILL, and a drained relay exits by
# itself well before that. A draining relay takes no new sockets but still counts in the metric until
# it exits, so the scale-in cooldown is longer than a whole drain: the next step in is decided on a
# fleet whose last removal has finished.

locals {
  relay_scaling_resource_id = "service/${aws_ecs_cluster.relays.name}/${aws_ecs_service.relays.name}"
  scale_in_cooldown         = local.relay_stop_timeout + 120
}

resource "aws_appautoscaling_target" "relays" {
  service_namespace  = "ecs"
  resource_id        = local.relay_scaling_resource_id
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.relay_min_size
  max_capacity       = var.relay_max_size
}

# The relays' own load: Polysocket/Utilization (open sockets / capacity, %) with dimension
# ServiceName = the service, which every relay publishes each minute (relay_node/control/aws/metrics.py,
# settings POLYSOCKET_CLOUDWATCH_* in ecs.tf). Average over all datapoints of a minute = the average
# relay, since each relay sends one datapoint a minute.
resource "aws_appautoscaling_policy" "utilization" {
  count = var.scale_on_utilization_target > 0 ? 1 : 0

  name               = "${local.name}-relay-utilization"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.relays.service_namespace
  resource_id        = aws_appautoscaling_target.relays.resource_id
  scalable_dimension = aws_appautoscaling_target.relays.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.scale_on_utilization_target
    disable_scale_in   = !var.scale_in_enabled
    scale_in_cooldown  = local.scale_in_cooldown
    scale_out_cooldown = 60

    customized_metric_specification {
      namespace   = local.metrics_namespace
      metric_name = "Utilization"
      statistic   = "Average"
      unit        = "Percent"

      dimensions {
        name  = local.metrics_dimension_name
        value = local.relay_service_name
      }
    }
  }
}

# And on CPU: JSON encoding, TLS and many small polls cost CPU before sockets run out.
resource "aws_appautoscaling_policy" "cpu" {
  count = var.scale_on_cpu_target > 0 ? 1 : 0

  name               = "${local.name}-relay-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.relays.service_namespace
  resource_id        = aws_appautoscaling_target.relays.resource_id
  scalable_dimension = aws_appautoscaling_target.relays.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.scale_on_cpu_target
    disable_scale_in   = !var.scale_in_enabled
    scale_in_cooldown  = local.scale_in_cooldown
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
