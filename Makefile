# Two commands on a fresh machine: `make run` (the local stack) and `make test` (every test).
# Both install what they need first: a virtualenv with the project, Node's `ws` for the second
# test target, and Debian's Chromium for the browser tests.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test deps lint typecheck pytest clean

run: deps
	$(VENV)/bin/polysocket dev

test: deps lint typecheck pytest

deps: $(STAMP) tests/targets/node_modules/.package-lock.json client/node_modules/.package-lock.json /usr/bin/chromium

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

tests/targets/node_modules/.package-lock.json: tests/targets/package-lock.json
	npm ci --prefix tests/targets --no-audit --no-fund

client/node_modules/.package-lock.json: client/package-lock.json
	npm ci --prefix client --no-audit --no-fund

/usr/bin/chromium:
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi

lint:
	$(PY) -m ruff check .

typecheck:
	$(PY) -m mypy

# Two runs: Playwright's sync API keeps an event loop alive in the main thread while its browser
# is open, which would break every asyncio test that runs after it in the same process.
pytest:
	$(PY) -m pytest --ignore=tests/browser
	$(PY) -m pytest tests/browser

clean:
	rm -rf $(VENV) tests/targets/node_modules client/node_modules
