# Every target creates and uses .venv itself: a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Two installs: the package alone (what `make serve` needs), and with the test extras.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PROTOS := $(wildcard proto/agentrun/v1/*.proto)

.PHONY: serve test proto console bench lint format services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP)

serve: $(STAMP)
	$(VENV)/bin/agentrun serve --http-listen 127.0.0.1:8080

services:
	bash scripts/ensure-services.sh

# Two workers, a test file each at a time (pytest-xdist): most of the suite's wall time is
# spent waiting on the processes tests start, so two files overlap well on two cores
# (591 s against 1,202 s serial, at load ~10).
test: lint services
	bash scripts/ensure-test-tools.sh
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

proto: $(DEV_STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		--include_source_info --descriptor_set_out=agentrun/v1/descriptor_set.binpb $(PROTOS)

# The web console (docs/console.md): TypeScript clients from the protos, then the build into
# agentrun/server/console/static/, which is checked in so `make serve` needs no Node.js.
console:
	cd console && npm ci --no-audit --no-fund --loglevel=error && npm run generate && npm run build

bench: $(DEV_STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The habits: buf's lint on the protos, ruff on the code and its tests, mypy --strict on
# agentrun/ (settings: pyproject's [tool.mypy]).
lint: $(DEV_STAMP)
	npx --yes @bufbuild/buf@1.75.0 lint
	$(VENV)/bin/ruff check agentrun tests scripts
	$(VENV)/bin/ruff format --check agentrun tests scripts
	$(VENV)/bin/mypy

# Rewrites files in place (the settings are pyproject's [tool.ruff.format]).
format: $(DEV_STAMP)
	$(VENV)/bin/ruff format agentrun tests scripts

clean:
	rm -rf $(VENV) .agentrun
