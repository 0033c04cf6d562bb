# HTTPS on every relay (the default; var.relay_plain_http turns it off for private networks).
#
# A certificate cannot name an ECS task id nobody knows in advance, and ordering one per task would
# hit the CA's limits at the first scale-out. So the fleet names its relays from a fixed pool of
# slots s00 ... sNN under relay_domain: a relay leases a free slot in Redis while it lives and serves
# that slot's certificate ({slot}.{relay_domain} and *.{slot}.{relay_domain}), ordered once by ACME
# DNS-01 through the Route 53 zone and kept for every later holder of the slot
# (relay_node/control/aws/slots.py, leases.py, certs.py).
#
# What Terraform owns here: the slot names (so IAM can name each record the relays may write), the
# certificate store -- one Secrets Manager secret per slot and one for the ACME account key, created
# empty, encrypted with a key of this fleet -- and the settings that tell the relays all of it
# (ecs.tf). The relays fill and renew the secrets; Terraform never sees a private key.

locals {
  slot_mode = !var.relay_plain_http

  # The public port clients use; the relay's relay domain carries it unless it is HTTPS's own.
  relay_port          = coalesce(var.relay_port, local.slot_mode ? 443 : 80)
  relay_public_domain = local.relay_port == 443 ? var.relay_domain : "${var.relay_domain}:${local.relay_port}"

  # relay_node/control/aws/slots.py slot_names(): s00 ... s{count-1}, at least two digits.
  # tests/cloud/test_terraform_apply.py checks the names below against that function.
  slot_width = max(2, length(tostring(var.relay_slot_count - 1)))
  slot_hosts = local.slot_mode ? [
    for i in range(var.relay_slot_count) : format("s%0${local.slot_width}d.%s", i, var.relay_domain)
  ] : []

  # The names the relays write, as IAM compares them (route53:ChangeResourceRecordSetsNormalizedRecordNames:
  # lower case, no trailing dot, "*" as its octal escape \052): each slot's A records, {slot} and
  # *.{slot} (relay_node/control/aws/route53.py), and the TXT record of its DNS-01 challenges, which
  # validates both names (relay_node/control/aws/certs.py).
  slot_record_names     = flatten([for h in local.slot_hosts : [h, "\\052.${h}"]])
  acme_challenge_names  = [for h in local.slot_hosts : "_acme-challenge.${h}"]
  deployment_max_tasks  = ceil(var.relay_max_size * local.deployment_maximum_percent / 100)
  cert_prefix           = "polysocket/${var.stage}/"
  acme_directory_in_key = trimsuffix(replace(var.acme_directory, "/^[A-Za-z][A-Za-z0-9+.-]*:\\/\\//", ""), "/")

  # relay_node/control/aws/certstore.py: secret "{prefix}{entry}" with every character a secret name
  # cannot hold made "-"; entries from certs.py: cert/{host}, acme-account/{directory without scheme}.
  slot_cert_secret_names = {
    for h in local.slot_hosts : h => replace("${local.cert_prefix}cert/${h}", "/[^A-Za-z0-9/_+=.@-]/", "-")
  }
  acme_account_secret_name = replace("${local.cert_prefix}acme-account/${local.acme_directory_in_key}",
  "/[^A-Za-z0-9/_+=.@-]/", "-")
}

# The fleet's own key: reading a certificate's private key needs both secretsmanager:GetSecretValue on
# that secret and kms:Decrypt on this key through Secrets Manager, which only the relay task role (and
# the account's administrators, through the key policy's account statement) has.
resource "aws_kms_key" "certs" {
  count = local.slot_mode ? 1 : 0

  description             = "${local.name}: relay TLS private keys and the ACME account key (Secrets Manager)"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersTheKey" # the default key policy: IAM policies of this account decide
      Effect    = "Allow"
      Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_kms_alias" "certs" {
  count = local.slot_mode ? 1 : 0

  name          = "alias/${local.name}-relay-certs"
  target_key_id = aws_kms_key.certs[0].key_id
}

# Everything stored here can be had again (a new order, a new ACME account), so a destroy deletes at
# once: an apply of the same stage right after must not meet a name still scheduled for deletion.
resource "aws_secretsmanager_secret" "slot_cert" {
  # checkov:skip=CKV2_AWS_57:a certificate is renewed by the relays through ACME (renew-before), not by a Secrets Manager rotation Lambda
  for_each = local.slot_cert_secret_names

  name                    = each.value
  description             = "polysocket relay TLS material: certificate and private key of ${each.key} and *.${each.key}"
  kms_key_id              = aws_kms_key.certs[0].arn
  recovery_window_in_days = 0
}

resource "aws_secretsmanager_secret" "acme_account" {
  # checkov:skip=CKV2_AWS_57:the ACME account key lives as long as the account; rotating it means a new account, which the relays make when the secret is empty
  count = local.slot_mode ? 1 : 0

  name                    = local.acme_account_secret_name
  description             = "polysocket relay TLS material: ACME account key for ${var.acme_directory}"
  kms_key_id              = aws_kms_key.certs[0].arn
  recovery_window_in_days = 0
}
