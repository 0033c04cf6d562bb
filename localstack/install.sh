#!/bin/bash
# Install LocalStack (the Python package, no Docker) into a virtual environment of its own, from PyPI only.
#
#   localstack/install.sh [VENV]     default VENV: $PSTEST_LOCALSTACK_VENV or localstack/.venv
#
# It runs as `python -m localstack.runtime.main` with OVERRIDE_IN_DOCKER=0 (see localstack/harness.py).
# Why a venv of its own: localstack-core pins and pulls a large, fast-moving dependency tree that must
# not meet the project's. Why the pins: the `[runtime]` extra's open ranges now resolve to releases that
# break 4.13.1 (cbor2 6.x: "No module named 'cbor2._decoder'"; pyOpenSSL 26: "'X509' object has no
# attribute 'add_extensions'"). Those two are pinned below, and the whole resolution is additionally cut
# off at an upload date (pip's --uploaded-prior-to), so a release published later cannot change it.
# The machine's pip configuration (extra local indexes, find-links) is ignored for this install: those
# indexes carry no upload dates, and CI must resolve exactly what a fresh machine resolves from PyPI.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${PSTEST_LOCALSTACK_VENV:-$here/.venv}}
python=${PYTHON:-python3}
LOCALSTACK_VERSION=4.13.1
CUTOFF=2026-02-15T00:00:00Z

# pip reads PIP_* variables and config files; neutralise both for this one install.
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_NO_INDEX PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
pip_opts=(--index-url https://pypi.org/simple --quiet)
# keep the system CA bundle if the machine has one (a TLS-intercepting proxy would need it)
[ -r /etc/ssl/certs/ca-certificates.crt ] && pip_opts+=(--cert /etc/ssl/certs/ca-certificates.crt)

start=$(date +%s)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$LOCALSTACK_VERSION" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if version("localstack-core") == sys.argv[1] else 1)
PY
  echo "localstack-core $LOCALSTACK_VERSION already in $venv"
  exit 0
fi

"$python" -m venv --clear "$venv"
# a pip that knows --uploaded-prior-to (older pips refuse the option)
"$venv/bin/python" -m pip install "${pip_opts[@]}" --upgrade "pip>=26"
constraints="$venv/polysocket-constraints.txt"
cat > "$constraints" <<PINS
cbor2<6
pyOpenSSL<26
PINS
"$venv/bin/python" -m pip install "${pip_opts[@]}" \
  --uploaded-prior-to "$CUTOFF" --constraint "$constraints" \
  "localstack-core[runtime]==$LOCALSTACK_VERSION"
# fail here, not in the first test, if the runtime does not import
"$venv/bin/python" -c 'import localstack.runtime.main, cbor2, OpenSSL' >/dev/null
"$venv/bin/python" -m pip freeze > "$venv/polysocket-freeze.txt"
echo "localstack-core $LOCALSTACK_VERSION installed in $venv in $(( $(date +%s) - start )) s" \
     "(resolved versions: $venv/polysocket-freeze.txt)"
