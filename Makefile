# Two entry points for a fresh machine: `make run` (install, bring up the local Prefect + MLflow stack,
# rebuild the pipeline through it, serve the page) and `make test` (install, run the test suite). Both are
# idempotent and quick once installed; `make stop` ends the stack.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(CURDIR)/.venv/bin:$(PATH)
# Nothing leaves this machine: no usage telemetry from Prefect, MLflow or anything honouring DO_NOT_TRACK.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true

UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
HOST ?= 127.0.0.1
PORT ?= 8000
# gunicorn processes x threads; each worker loads the champion's SavedModel when it starts (before serving)
WORKERS ?= 2
THREADS ?= 8
PYTEST_ARGS ?=
PREFECT_WORKERS ?= 2
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000
STACK = python -m flows.deployments

.PHONY: help install install-dev install-web install-browser install-compose run stack stop repro serve test lint format smoke report workers workers-stop

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet 'uv>=0.5,<1'

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups
	touch $@

install: .venv/.installed ## Python environment from uv.lock

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install-web: node_modules/.installed ## the page's npm dependencies (@tensorflow/tfjs, served locally)

install-browser: ## Debian chromium for the browser tests
	@command -v chromium >/dev/null || (apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null)

install-compose: ## Debian docker-compose: the compose-file test parses docker/compose.yaml (no engine needed)
	@command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || (apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker-compose >/dev/null)

install-dev: install install-web install-browser install-compose

# The stack is stopped on exit (Ctrl-C included) only when this `make run` started it; its processes live
# in their own sessions, so the terminal's Ctrl-C reaches only this shell and gunicorn.
run: install install-web ## stack up (Prefect UI + MLflow URLs), dvc repro through it, serve; Ctrl-C stops all
	@started=0; $(STACK) status >/dev/null 2>&1 || started=1; \
	trap '[ $$started = 0 ] || $(STACK) down' EXIT; \
	$(MAKE) --no-print-directory stack && dvc repro && $(MAKE) --no-print-directory serve

stack: install ## start or reuse the loopback Prefect server, deployments, PREFECT_WORKERS warm workers, MLflow UI
	$(STACK) up --workers $(PREFECT_WORKERS) --port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT)

stop: ## stop every process of the stack (server, workers and their flow runs, MLflow UI)
	$(STACK) down

repro: install ## rebuild the pipeline only
	dvc repro

serve: install install-web ## serve the page and the champion model with gunicorn (HOST, PORT, WORKERS, THREADS)
	@echo "serving on http://$(HOST):$(PORT)/"
	gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --threads $(THREADS) --timeout 180 \
		--access-logfile - 'services.app:create_app()'

test: install-dev ## run the whole test suite
	pytest $(PYTEST_ARGS)

workers: stack ## old name of `make stack`

workers-stop: stop ## old name of `make stop`

smoke: install ## the whole pipeline on params.smoke.yaml in .smoke/ (minutes)
	python scripts/smoke.py

report: install ## regenerate reports/summary.md and the README results table from the outputs
	multidigit report

lint: install ## ruff lint and format check
	ruff check . && ruff format --check .

format: install
	ruff format . && ruff check --fix .
