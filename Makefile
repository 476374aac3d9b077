# Two commands for a newcomer: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) -m deploy.local
WITH_STACK_ENV := set -a && . .stack/env && set +a &&
WEB_PORT ?= 6066
WEB_HOST ?= 127.0.0.1
WORKERS ?= 1
PYTEST_ARGS ?=

.PHONY: help venv lock docs stack-up stack-down stack-status migrate run worker test unit bench chaos soak clean

help:
	@echo "make run         start Kafka + PostgreSQL, migrate, run one worker on :$(WEB_PORT)"
	@echo "make run WORKERS=4           four workers in one consumer group on :$(WEB_PORT)..:$$(($(WEB_PORT)+3)) (Ctrl-C stops all)"
	@echo "make test        start the stack and run the whole test suite"
	@echo "make worker WEB_PORT=6067   one more worker in the same consumer group"
	@echo "make bench EVENTS=200000     the live path (workers, bare Faust, raw ceilings, replay, HTTP load) in one run"
	@echo "make chaos CHAOS_EVENTS=100000  faults under load, then an audit of lost/doubled events"
	@echo "make soak SOAK_MINUTES=30   2 workers under 400 POST/s, 400 GET/s, 1000 produced/s; RSS, fds, tasks, lags, p99 per minute"
	@echo "make docs        regenerate the table of settings in docs/configuration.md from app/settings.py"
	@echo "make stack-up | stack-down | stack-status | migrate | unit | lock | clean"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[test]'
	touch $@

lock: $(VENV)/.installed-bench
	{ head -2 requirements.lock; $(PY) -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# The table of docs/configuration.md is generated from app/settings.py (tests/unit/test_docs.py checks it).
docs: venv
	$(PY) -m app.settings_docs

stack-up: venv
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

migrate: stack-up
	$(WITH_STACK_ENV) $(PY) -m app migrate

run: migrate
	$(WITH_STACK_ENV) if [ "$(WORKERS)" = 1 ]; then \
	  exec $(VENV)/bin/faust -A app.main worker --web-host $(WEB_HOST) --web-bind $(WEB_HOST) --web-port $(WEB_PORT) -l info; \
	else \
	  exec $(PY) -m app workers --count $(WORKERS) --base-port $(WEB_PORT) --host $(WEB_HOST); \
	fi

worker: venv
	$(WITH_STACK_ENV) exec $(VENV)/bin/faust -A app.main worker --web-host $(WEB_HOST) --web-bind $(WEB_HOST) --web-port $(WEB_PORT) -l info

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test: stack-up deploy-tools toxiproxy vegeta $(VENV)/.installed-bench
	$(WITH_STACK_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# buildah + debootstrap (apt), helm (go install), the KEDA and prometheus-operator
# modules, and a local base image for docker/Dockerfile: for tests/deployment.
.PHONY: deploy-tools
deploy-tools:
	bash deploy/tools/install-deploy-tools.sh

clean:
	rm -rf data .pytest_cache

EVENTS ?= 200000
BENCH_ARGS ?=
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q -c requirements.lock -e '.[test,bench]'
	touch $@

bench: stack-up vegeta $(VENV)/.installed-bench
	$(WITH_STACK_ENV) $(PY) -m bench --events $(EVENTS) --plot $(BENCH_ARGS)

SOAK_MINUTES ?= 30
SOAK_ARGS ?=
# Not in `make test` (which runs a 60-second smoke of it): docs/performance.md "Soak".
soak: stack-up vegeta $(VENV)/.installed-bench
	$(WITH_STACK_ENV) $(PY) -m bench.soak --minutes $(SOAK_MINUTES) --plot $(SOAK_ARGS)

# Vegeta, the HTTP load generator of make bench and make soak, built with go install into .stack/bin.
.PHONY: vegeta
vegeta:
	bash bench/install-vegeta.sh >/dev/null

# Toxiproxy's server, built with go install into .stack/bin (chaos/install-toxiproxy.sh).
.PHONY: toxiproxy
toxiproxy:
	bash chaos/install-toxiproxy.sh >/dev/null

CHAOS_EVENTS ?= 100000
chaos: stack-up toxiproxy
	$(WITH_STACK_ENV) $(PY) -m chaos.run --events $(CHAOS_EVENTS)
