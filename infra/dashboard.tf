# A CloudWatch dashboard over what every relay publishes (relay_node/control/aws/metrics.py):
# Polysocket/OpenSockets (Count) and Polysocket/Utilization (Percent, open sockets / capacity), one
# datapoint per relay every var.relay_metric_interval seconds, with the one dimension ServiceName =
# the relay service (settings POLYSOCKET_CLOUDWATCH_* in ecs.tf). Each relay's datapoints share that
# one metric stream, so the statistics over a period are fleet statistics: with the default 60 s
# interval and a 60 s period, Sum of OpenSockets is the fleet's open sockets, SampleCount the number
# of relays reporting, and Average / Maximum / Minimum of Utilization the average, fullest and
# emptiest relay. The per-node view (draining, slots, heartbeats, connect rate) is
# `polysocket status`; the relays' Prometheus /metrics have the rest (deploy/grafana/).
#
# The body is JSON in a heredoc rather than jsonencode() so that tests/unit/test_dashboards.py can
# read every query without a Terraform run and check that it names a metric, namespace and
# dimension the relays actually publish.

resource "aws_cloudwatch_dashboard" "relays" {
  dashboard_name = "${local.name}-relays"
  dashboard_body = <<-JSON
    {
      "widgets": [
        {
          "type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
          "properties": {
            "markdown": "## polysocket relays (${local.relay_service_name})\nOne datapoint per relay every ${var.relay_metric_interval} s. Per node: `polysocket status`. Scaling target: ${var.scale_on_utilization_target} % (0 = off)."
          }
        },
        {
          "type": "metric", "x": 0, "y": 2, "width": 12, "height": 6,
          "properties": {
            "title": "Utilization: open sockets / capacity (%)",
            "region": "${var.region}", "view": "timeSeries", "stacked": false, "period": 60,
            "yAxis": { "left": { "min": 0, "max": 100 } },
            "metrics": [
              ["${local.metrics_namespace}", "Utilization", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Average", "label": "average relay" }],
              ["${local.metrics_namespace}", "Utilization", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Maximum", "label": "fullest relay" }],
              ["${local.metrics_namespace}", "Utilization", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Minimum", "label": "emptiest relay" }]
            ],
            "annotations": { "horizontal": [{ "label": "scaling target", "value": ${var.scale_on_utilization_target} }] }
          }
        },
        {
          "type": "metric", "x": 12, "y": 2, "width": 12, "height": 6,
          "properties": {
            "title": "Open sockets",
            "region": "${var.region}", "view": "timeSeries", "stacked": false, "period": 60,
            "metrics": [
              ["${local.metrics_namespace}", "OpenSockets", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Sum", "label": "fleet (at a 60 s interval)" }],
              ["${local.metrics_namespace}", "OpenSockets", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Maximum", "label": "fullest relay" }]
            ]
          }
        },
        {
          "type": "metric", "x": 0, "y": 8, "width": 12, "height": 6,
          "properties": {
            "title": "Relays reporting (datapoints per minute)",
            "region": "${var.region}", "view": "timeSeries", "stacked": false, "period": 60,
            "metrics": [
              ["${local.metrics_namespace}", "OpenSockets", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "SampleCount", "label": "relays (at a 60 s interval)" }]
            ]
          }
        },
        {
          "type": "metric", "x": 12, "y": 8, "width": 12, "height": 6,
          "properties": {
            "title": "Utilization now",
            "region": "${var.region}", "view": "singleValue", "period": 300,
            "metrics": [
              ["${local.metrics_namespace}", "Utilization", "${local.metrics_dimension_name}", "${local.relay_service_name}", { "stat": "Average", "label": "average relay, 5 min" }]
            ]
          }
        }
      ]
    }
  JSON
}

output "cloudwatch_dashboard" {
  description = "Name of the CloudWatch dashboard over the relays' published metrics."
  value       = aws_cloudwatch_dashboard.relays.dashboard_name
}
