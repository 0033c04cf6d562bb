# The relay instance role. A relay may:
#  * change Route 53 records only in the given zone and only for names under relay_domain (it
#    UPSERTs {node}.{relay_domain} and *.{node}.{relay_domain} at boot, DELETEs them at stop);
#  * publish metrics only into the Polysocket CloudWatch namespace;
#  * read its wheel and its SSM parameters;
#  * be reached by SSM Session Manager (no SSH, no key pair, port 22 closed).

data "aws_iam_policy_document" "relay_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "relay" {
  name               = "${local.name}-relay"
  assume_role_policy = data.aws_iam_policy_document.relay_assume.json
}

locals {
  wheel_bucket = split("/", trimprefix(var.relay_wheel_s3_uri, "s3://"))[0]
  wheel_key    = join("/", slice(split("/", trimprefix(var.relay_wheel_s3_uri, "s3://")), 1, length(split("/", trimprefix(var.relay_wheel_s3_uri, "s3://")))))
}

data "aws_iam_policy_document" "relay" {
  statement {
    sid       = "OwnRelayRecords"
    actions   = ["route53:ChangeResourceRecordSets"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::hostedzone/${var.route53_zone_id}"]

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

  statement {
    sid       = "WaitForChange"
    actions   = ["route53:GetChange"]
    resources = ["arn:${data.aws_partition.current.partition}:route53:::change/*"]
  }

  statement {
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
    sid       = "ReadWheel"
    actions   = ["s3:GetObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${local.wheel_bucket}/${local.wheel_key}"]
  }

  statement {
    sid       = "ReadConfig"
    actions   = ["ssm:GetParameter", "ssm:GetParameters"]
    resources = [aws_ssm_parameter.redis_url.arn]
  }
}

resource "aws_iam_role_policy" "relay" {
  name   = "relay"
  role   = aws_iam_role.relay.id
  policy = data.aws_iam_policy_document.relay.json
}

resource "aws_iam_role_policy_attachment" "relay_ssm_core" {
  role       = aws_iam_role.relay.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "relay" {
  name = "${local.name}-relay"
  role = aws_iam_role.relay.name
}
