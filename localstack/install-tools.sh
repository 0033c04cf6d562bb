#!/bin/bash
# Install the Python tools the deployment tests use, each into a virtual environment of its own, from PyPI
# only, pinned:
#
#   localstack/install-tools.sh [TOOL...]    TOOL: moto, cfn-lint, checkov (default: all three)
#   venvs under $PSTEST_TOOLS_DIR (default localstack/.tools): .tools/moto, .tools/cfn-lint, .tools/checkov
#
# * moto (moto[server]): LocalStack's community edition answers 501 for Auto Scaling, ECS, Application
#   Auto Scaling and API Gateway v2; moto's server answers them as a control plane (it stores what it is
#   told, it runs no containers). tests/cloud/test_terraform_apply.py points only those endpoints of the
#   AWS provider at it, everything else at LocalStack, in one `terraform apply` of infra/.
# * cfn-lint: checks the CloudFormation template `serverless package --stage local` renders.
# * checkov: the static checks of infra/ (findings are fixed or justified inline).
# Why separate venvs: each pins a large dependency tree (Flask/Werkzeug; aws-sam-translator; checkov's
# many pins) that must not meet the project's, LocalStack's or each other's.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${PSTEST_TOOLS_DIR:-$here/.tools}
python=${PYTHON:-python3}
declare -A spec=([moto]="moto[server]==5.2.5" [cfn-lint]="cfn-lint==1.58.0" [checkov]="checkov==3.3.30")
declare -A probe=([moto]="import moto.server" [cfn-lint]="import cfnlint" [checkov]="import checkov")
tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(moto cfn-lint checkov)

# pip reads PIP_* variables and config files (extra local indexes here); neutralise both: CI must resolve
# exactly what a fresh machine resolves from PyPI.
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_NO_INDEX PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
pip_opts=(--index-url https://pypi.org/simple --quiet)
[ -r /etc/ssl/certs/ca-certificates.crt ] && pip_opts+=(--cert /etc/ssl/certs/ca-certificates.crt)

mkdir -p "$dir"
for tool in "${tools[@]}"; do
  [ -n "${spec[$tool]:-}" ] || { echo "install-tools.sh: unknown tool $tool (moto, cfn-lint, checkov)" >&2; exit 2; }
  venv=$dir/$tool
  want=${spec[$tool]}
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/polysocket-spec" 2>/dev/null)" = "$want" ] \
     && "$venv/bin/python" -c "${probe[$tool]}" 2>/dev/null; then
    echo "$want already in $venv"
    continue
  fi
  start=$(date +%s)
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install "${pip_opts[@]}" "$want"
  "$venv/bin/python" -c "${probe[$tool]}"
  echo "$want" > "$venv/polysocket-spec"
  "$venv/bin/python" -m pip freeze > "$venv/polysocket-freeze.txt"
  echo "$want installed in $venv in $(( $(date +%s) - start )) s"
done
