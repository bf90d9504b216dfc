# Two entry points for a fresh machine: `make run` (install, rebuild the pipeline, serve the page) and
# `make test` (install, run the test suite). Both are idempotent and quick once installed.
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

.PHONY: help install install-dev install-web install-browser install-compose run repro serve test lint format smoke report workers workers-stop

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

run: install install-web ## rebuild the pipeline on params.yaml, then serve the page
	dvc repro
	$(MAKE) --no-print-directory serve

repro: install ## rebuild the pipeline only
	dvc repro

serve: install install-web ## serve the page and the champion model with gunicorn (HOST, PORT, WORKERS, THREADS)
	@echo "serving on http://$(HOST):$(PORT)/"
	gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --threads $(THREADS) --timeout 180 \
		--access-logfile - 'services.app:create_app()'

test: install-dev ## run the whole test suite
	pytest $(PYTEST_ARGS)

workers: install ## local Prefect server (PREFECT_PORT, 4200), deployments, PREFECT_WORKERS (2) workers; .stack/
	python -m flows.deployments up --workers $(PREFECT_WORKERS) --port $(PREFECT_PORT)

workers-stop: ## stop the server and workers that `make workers` started
	python -m flows.deployments down

smoke: install ## the whole pipeline on params.smoke.yaml in .smoke/ (minutes)
	python scripts/smoke.py

report: install ## regenerate reports/summary.md and the README results table from the outputs
	multidigit report

lint: install ## ruff lint and format check
	ruff check . && ruff format --check .

format: install
	ruff format . && ruff check --fix .
