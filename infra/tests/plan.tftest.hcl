# `terraform test` with a mocked AWS provider: plans (and mock-applies) the whole configuration without an AWS
# account or network, so expressions, the rendered boot script, validations and preconditions are
# evaluated. Run by ./validate.sh. Mocked values are placeholders, not AWS behaviour.

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
  mock_data "aws_ssm_parameter" {
    defaults = {
      insecure_value = "ami-0123456789abcdef0"
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{}"
    }
  }
  # The provider validates ARNs it is given; the mock's random strings are not ARNs.
  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::000000000000:instance-profile/polysocket-prod-relay"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::000000000000:role/polysocket-prod-relay"
    }
  }
  mock_resource "aws_ssm_parameter" {
    defaults = {
      arn = "arn:aws:ssm:us-east-1:000000000000:parameter/polysocket/prod/x"
    }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id             = "lt-0123456789abcdef0"
      latest_version = 1
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
  route53_zone_id    = "Z0123456789EXAMPLE"
  relay_domain       = "relay.example.com"
  relay_wheel_s3_uri = "s3://example-artifacts/releases/polysocket-0.1.0-py3-none-any.whl"
  redis_auth_token   = "0123456789abcdef0123456789abcdef"
}

run "applies_with_defaults" {
  # apply against the mock: computed attributes (endpoint, ids) get the mocked values.
  command = apply

  assert {
    condition     = length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "one public and one private subnet per AZ"
  }
  assert {
    condition     = aws_autoscaling_group.relays.name == "polysocket-prod-relays"
    error_message = "ASG name must match the dimension the relays publish under"
  }
  assert {
    condition     = local.wheel_bucket == "example-artifacts" && local.wheel_key == "releases/polysocket-0.1.0-py3-none-any.whl"
    error_message = "wheel URI split"
  }
  assert {
    condition     = aws_elasticache_replication_group.control.parameter_group_name == "default.valkey8"
    error_message = "parameter group follows engine and major version"
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.relay.user_data), "POLYSOCKET_FQDN=$node.relay.example.com")
    error_message = "the boot script sets the relay's public name"
  }
  assert {
    condition     = aws_ssm_parameter.redis_url.value == "rediss://:0123456789abcdef0123456789abcdef@master.polysocket-prod-control.abc123.use1.cache.amazonaws.com:6379/0"
    error_message = "redis URL"
  }
  assert {
    condition     = length(aws_autoscaling_policy.open_sockets) == 1 && length(aws_autoscaling_policy.cpu) == 1
    error_message = "both target-tracking policies"
  }
}

run "refuses_a_socket_target_above_capacity" {
  command = plan

  variables {
    relay_capacity          = 1000
    scale_on_sockets_target = 5000
  }

  expect_failures = [aws_autoscaling_policy.open_sockets]
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
    condition     = aws_elasticache_replication_group.control.parameter_group_name == "default.redis7"
    error_message = "redis 7 parameter group"
  }
  assert {
    condition     = aws_elasticache_replication_group.control.automatic_failover_enabled == false
    error_message = "no failover without replicas"
  }
}
