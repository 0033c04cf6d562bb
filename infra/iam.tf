# Two roles for the relay tasks, each with exactly what it uses.
#
# Execution role (ECS itself, while starting a task): pull the image, write the log stream, read the
# two SecureStrings the container gets as secrets.
#
# Task role (the relay process, through the SDK's container credentials):
#  * Route 53, in the given zone only: UPSERT/DELETE the relays' A records -- with HTTPS exactly the
#    slots' {slot} and *.{slot}, and the TXT records _acme-challenge.{slot} of their certificate
#    orders, plus DELETE alone of A records under relay_domain (the sweep); with plain HTTP any name under relay_domain ({task} and *.{task}) -- wait for the change
#    (GetChange), list the zone's records (the sweep of records left by relays that died without
#    removing theirs: relay_node/control/aws/route53.py);
#  * with HTTPS, the certificate store (tls.tf): get and put the values of its secrets only, and the
#    fleet's KMS key through Secrets Manager only;
#  * CloudWatch: PutMetricData into the Polysocket namespace only;
#  * EC2: DescribeNetworkInterfaces, to learn the task's public address from its network interface
#    (relay_node/control/aws/discovery.py); it has no resource-level permissions, hence "*".
# Nothing else: no SSM, no S3, no IAM, no other secret, no shell (no ECS Exec).

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# --- execution role --------------------------------------------------------------------------------

resource "aws_iam_role" "relay_execution" {
  name               = "${local.name}-relay-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

locals {
  # arn of the ECR repository the image comes from, when it comes from ECR (else no pull permission)
  relay_image_ecr = regexall("^(\\d{12})\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", local.relay_image)
  relay_image_repository_arns = [
    for m in local.relay_image_ecr : "arn:${local.partition}:ecr:${m[1]}:${m[0]}:repository/${m[2]}"
  ]
}

data "aws_iam_policy_document" "relay_execution" {
  dynamic "statement" {
    for_each = length(local.relay_image_repository_arns) > 0 ? [1] : []
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = local.relay_image_repository_arns
    }
  }

  dynamic "statement" {
    for_each = length(local.relay_image_repository_arns) > 0 ? [1] : []
    content {
      sid       = "RegistryLogin"
      actions   = ["ecr:GetAuthorizationToken"] # has no resource-level permissions
      resources = ["*"]
    }
  }

  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.relay.arn}:*"]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["ssm:GetParameters"]
    resources = [aws_ssm_parameter.redis_url.arn, aws_ssm_parameter.metrics_token.arn]
  }
}

resource "aws_iam_role_policy" "relay_execution" {
  name   = "relay-execution"
  role   = aws_iam_role.relay_execution.id
  policy = data.aws_iam_policy_document.relay_execution.json
}

# --- task role -------------------------------------------------------------------------------------

resource "aws_iam_role" "relay_task" {
  name               = "${local.name}-relay-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

locals {
  zone_arn = "arn:${local.partition}:route53:::hostedzone/${var.route53_zone_id}"
}

data "aws_iam_policy_document" "relay_task" {
  # Plain HTTP: names are task ids nobody knows in advance, so any A record under relay_domain.
  dynamic "statement" {
    for_each = local.slot_mode ? [] : [1]
    content {
      sid       = "OwnRelayRecords"
      actions   = ["route53:ChangeResourceRecordSets"]
      resources = [local.zone_arn]

      condition {
        test     = "ForAllValues:StringLike"
        variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        values   = ["*.${var.relay_domain}"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsRecordTypes"
        values   = ["A"]
      }
    }
  }

  # HTTPS: exactly the slots' A records ({slot} and *.{slot}) ...
  dynamic "statement" {
    for_each = local.slot_mode ? [1] : []
    content {
      sid       = "SlotRecords"
      actions   = ["route53:ChangeResourceRecordSets"]
      resources = [local.zone_arn]

      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        values   = local.slot_record_names
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsRecordTypes"
        values   = ["A"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsActions"
        values   = ["UPSERT", "DELETE"]
      }
    }
  }

  # ... and deletes of stale A records anywhere under relay_domain: the record sweep deletes every
  # due record in one batch (relay_node/control/aws/sweeper.py), and a leftover name that is no slot
  # (a task-named node of an earlier plain-HTTP fleet) would otherwise fail that batch for ever.
  # Pointing a name at an address (UPSERT) stays limited to the slots' names.
  dynamic "statement" {
    for_each = local.slot_mode ? [1] : []
    content {
      sid       = "SweepStaleRecords"
      actions   = ["route53:ChangeResourceRecordSets"]
      resources = [local.zone_arn]

      condition {
        test     = "ForAllValues:StringLike"
        variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        values   = ["*.${var.relay_domain}"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsRecordTypes"
        values   = ["A"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsActions"
        values   = ["DELETE"]
      }
    }
  }

  # ... and exactly their DNS-01 challenge TXT records (a relay writes and removes them while it
  # orders its slot's certificate).
  dynamic "statement" {
    for_each = local.slot_mode ? [1] : []
    content {
      sid       = "AcmeChallengeRecords"
      actions   = ["route53:ChangeResourceRecordSets"]
      resources = [local.zone_arn]

      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
        values   = local.acme_challenge_names
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsRecordTypes"
        values   = ["TXT"]
      }
      condition {
        test     = "ForAllValues:StringEquals"
        variable = "route53:ChangeResourceRecordSetsActions"
        values   = ["UPSERT", "DELETE"]
      }
    }
  }

  # The certificate store (tls.tf): read and write the slots' certificates and the ACME account key,
  # in the secrets Terraform made (no CreateSecret, no DeleteSecret, no other secret) ...
  dynamic "statement" {
    for_each = local.slot_mode ? [1] : []
    content {
      sid       = "CertificateStore"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
      resources = concat([for h in local.slot_hosts : aws_secretsmanager_secret.slot_cert[h].arn], aws_secretsmanager_secret.acme_account[*].arn)
    }
  }

  # ... whose values are encrypted with the fleet's key, used only through Secrets Manager.
  dynamic "statement" {
    for_each = local.slot_mode ? [1] : []
    content {
      sid       = "CertificateKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = aws_kms_key.certs[*].arn

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${var.region}.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "ListZoneForSweep"
    actions   = ["route53:ListResourceRecordSets"]
    resources = [local.zone_arn]
  }

  statement {
    sid       = "WaitForChange"
    actions   = ["route53:GetChange"]
    resources = ["arn:${local.partition}:route53:::change/*"]
  }

  statement {
    # checkov:skip=CKV_AWS_356:PutMetricData has no resource-level permissions; the namespace condition bounds it
    sid       = "PublishMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metrics_namespace]
    }
  }

  statement {
    # checkov:skip=CKV_AWS_356:DescribeNetworkInterfaces has no resource-level permissions; it reads, never changes
    sid       = "FindOwnPublicAddress"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "relay_task" {
  name   = "relay-task"
  role   = aws_iam_role.relay_task.id
  policy = data.aws_iam_policy_document.relay_task.json

  lifecycle {
    # Three names per slot: a role's inline policies may hold 10,240 characters (without white space).
    precondition {
      condition     = length(data.aws_iam_policy_document.relay_task.minified_json) <= 10240
      error_message = "The relay task policy is over IAM's 10,240 characters: fewer slots (relay_slot_count) or a shorter relay_domain."
    }
  }
}
