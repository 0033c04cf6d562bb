#!/bin/bash
# Install moto's server (the `moto[server]` package, a stand-alone AWS mock) into a virtual environment
# of its own, from PyPI only.
#
#   localstack/install-moto.sh [VENV]     default VENV: $PSTEST_MOTO_VENV or localstack/.moto-venv
#
# Why: LocalStack's community edition answers 501 for Auto Scaling, ECS, Application Auto Scaling and
# API Gateway v2. moto's server answers them as a control plane (it stores what it is told; it runs no
# containers). tests/cloud/test_terraform_apply.py points only those endpoints of the AWS provider at
# it, and every other service at LocalStack, in one `terraform apply` of infra/.
# Why a venv of its own: moto[server] pins Flask/Werkzeug and friends, which must not meet the project's
# or LocalStack's (LocalStack vendors its own fork of moto, without the server).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${PSTEST_MOTO_VENV:-$here/.moto-venv}}
python=${PYTHON:-python3}
MOTO_VERSION=5.1.22

unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_NO_INDEX PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
pip_opts=(--index-url https://pypi.org/simple --quiet)
[ -r /etc/ssl/certs/ca-certificates.crt ] && pip_opts+=(--cert /etc/ssl/certs/ca-certificates.crt)

start=$(date +%s)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$MOTO_VERSION" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
import moto.server  # noqa: F401  (the server's extras are there too)
sys.exit(0 if version("moto") == sys.argv[1] else 1)
PY
  echo "moto[server] $MOTO_VERSION already in $venv"
  exit 0
fi

"$python" -m venv --clear "$venv"
"$venv/bin/python" -m pip install "${pip_opts[@]}" "moto[server]==$MOTO_VERSION"
"$venv/bin/python" -c 'import moto.server' >/dev/null
"$venv/bin/python" -m pip freeze > "$venv/polysocket-freeze.txt"
echo "moto[server] $MOTO_VERSION installed in $venv in $(( $(date +%s) - start )) s"
