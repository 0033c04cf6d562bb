#!/bin/bash
# Check infra/ without AWS and without contacting any registry:
#   terraform fmt -check, then init -backend=false and validate against a provider that is
#   already on disk (a filesystem mirror; default /opt/tf-plugins, or TF_PROVIDER_MIRROR), then
#   terraform test: tests/*.tftest.hcl plan everything against a mocked AWS provider.
# Runs in a copy of infra/ so neither .terraform/ nor a lock file lands in the repo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mirror=${TF_PROVIDER_MIRROR:-/opt/tf-plugins}
command -v terraform >/dev/null || { echo "validate.sh: terraform is not installed" >&2; exit 2; }
[ -d "$mirror/registry.terraform.io/hashicorp/aws" ] || {
  echo "validate.sh: no hashicorp/aws provider under $mirror (set TF_PROVIDER_MIRROR)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here"/*.tf "$here"/tests "$work"/
cat > "$work/cli.tfrc" <<CFG
disable_checkpoint = true
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
CFG
export TF_CLI_CONFIG_FILE="$work/cli.tfrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

terraform -chdir="$here" fmt -check -recursive -diff
terraform -chdir="$work" init -backend=false -input=false -no-color >/dev/null
terraform -chdir="$work" validate -no-color
terraform -chdir="$work" test -no-color
