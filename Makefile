# dify-batch-processor — `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN := $(VENV)/bin/dotenv -f .env run --no-override --
EMULATOR_PORT ?= 8081
WORKER_PORT ?= 8080
LOADER_PORT ?= 8082
DIFY_STANDIN_PORT ?= 8090
SHEETS_STANDIN_PORT ?= 8091
TASKS_STANDIN_PORT ?= 8123
export PYTHONPATH := $(CURDIR)

.DEFAULT_GOAL := help
.PHONY: help install lock test test-unit test-dify-server lint fmt setup demo demo-workflows run-local run-emulator stop-emulator \
	run-dify-standin run-worker test-worker run-sheets-standin run-tasks-standin run-loader \
	test-loader bench tf-fmt tf-check tf-validate clean

help: ## List every target
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

install: ## Create .venv, install the pinned dependencies and the `dify-batch` command
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --require-hashes -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	@touch $(VENV)/.installed
	@command -v gcloud >/dev/null || echo "note: gcloud is not on PATH; emulator tests will be skipped"

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	@$(MAKE) --no-print-directory install

lock: $(VENV)/.installed ## Re-pin requirements.txt (functions) and requirements-dev.txt from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -q -o requirements.txt
	$(VENV)/bin/uv pip compile pyproject.toml --group dev --extra cli --python-version 3.11 --generate-hashes -q -o requirements-dev.txt

test: $(VENV)/.installed ## Run the whole test suite (installs first if needed; starts its own emulator; ~5 min on 2 cores)
	$(VENV)/bin/pytest

test-unit: $(VENV)/.installed ## Run only the pure-logic unit tests (no emulator, under a second)
	$(VENV)/bin/pytest tests/unit

test-dify-server: $(VENV)/.installed ## The tier against Dify 1.14.1's own server (../shared/dify-server; starts it once)
	$(VENV)/bin/pytest -m dify_server tests/dify_server

lint: $(VENV)/.installed ## ruff (lint + format check), mypy, and the layer rule of shared/ (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared loader worker local cli
	$(VENV)/bin/lint-imports

fmt: $(VENV)/.installed ## Format the Python code and the Terraform
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	terraform fmt -recursive terraform

demo: $(VENV)/.installed ## Run the whole batch locally on the sample sheet (or CSV=path/to/sheet.csv)
	@$(PY) -m local.demo $(if $(CSV),--csv "$(CSV)") $(if $(filter true,$(WRITE_BACK)),--write-back)

demo-workflows: $(VENV)/.installed ## The demo with two workflows: rows routed by their `kind` column to two Dify apps
	@$(PY) -m local.demo --two-workflows

run-local: $(VENV)/.installed .env ## Start the whole local stack on .env's ports and keep it up (Ctrl+C stops it)
	@$(PY) -m local.run_local $(if $(CSV),--csv "$(CSV)")

setup: ## Create .env from .env.example (kept if it exists)
	@if [ -f .env ]; then echo ".env exists; left as it is"; else cp .env.example .env && echo "created .env from .env.example: edit it for a real sheet and Dify app"; fi

.env:
	@cp .env.example .env && echo "created .env from .env.example"

run-emulator: $(VENV)/.installed .env ## Start the Firestore emulator (Datastore mode) in the background on EMULATOR_PORT
	@mkdir -p .run
	@if [ -f .run/emulator.pid ] && kill -0 $$(cat .run/emulator.pid) 2>/dev/null; then \
		echo "emulator already running (pid $$(cat .run/emulator.pid))"; exit 0; fi; \
	nohup $(PY) -m local.emulator start --port $(EMULATOR_PORT) > .run/emulator.log 2>&1 & echo $$! > .run/emulator.pid; \
	for i in $$(seq 1 120); do \
		if curl -sf http://127.0.0.1:$(EMULATOR_PORT)/ >/dev/null; then \
			echo "emulator up: DATASTORE_EMULATOR_HOST=127.0.0.1:$(EMULATOR_PORT) (log: .run/emulator.log)"; exit 0; fi; \
		if ! kill -0 $$(cat .run/emulator.pid) 2>/dev/null; then cat .run/emulator.log; exit 1; fi; \
		sleep 0.5; done; echo "emulator did not start; see .run/emulator.log"; exit 1

stop-emulator: ## Stop the emulator started by run-emulator (and its Java process)
	@if [ -f .run/emulator.pid ]; then kill $$(cat .run/emulator.pid) 2>/dev/null || true; rm -f .run/emulator.pid; echo "emulator stopped"; else echo "no emulator started by make"; fi

run-dify-standin: $(VENV)/.installed ## Serve the local Dify stand-in (test/demo tool) on DIFY_STANDIN_PORT
	$(PY) -m local.dify_standin --port $(DIFY_STANDIN_PORT) --latency 1

run-worker: $(VENV)/.installed .env ## Serve the worker (process_row) with functions-framework on WORKER_PORT
	@$(RUN) $(PY) -m local.describe worker --port $(WORKER_PORT)
	$(RUN) $(VENV)/bin/functions-framework --source worker/main.py --target process_row --port $(WORKER_PORT)

test-worker: $(VENV)/.installed .env ## Create a sample PENDING row, send it to the local worker, print the outcome
	$(RUN) $(PY) -m local.send_task --worker-url http://127.0.0.1:$(WORKER_PORT)

run-loader: $(VENV)/.installed .env ## Serve the loader (load_sheet) on LOADER_PORT; starts the Sheets/Tasks stand-ins .env points at
	@$(RUN) $(PY) -m local.describe loader --port $(LOADER_PORT)
	$(RUN) $(PY) -m local.run_loader --port $(LOADER_PORT)

test-loader: $(VENV)/.installed .env ## Trigger the local loader, print its summary, follow the rows' statuses
	$(RUN) $(PY) -m local.trigger_loader --loader-url http://127.0.0.1:$(LOADER_PORT) $(OPTIONS)

run-sheets-standin: $(VENV)/.installed ## Serve the Sheets API stand-in with the sample sheet on SHEETS_STANDIN_PORT
	$(PY) -m local.sheets_standin --port $(SHEETS_STANDIN_PORT)

run-tasks-standin: $(VENV)/.installed ## Serve the Cloud Tasks stand-in (dispatching to WORKER_URL) on TASKS_STANDIN_PORT
	$(PY) -m local.cloud_tasks_standin --port $(TASKS_STANDIN_PORT) --dispatch

bench: $(VENV)/.installed ## Run every benchmark (about half an hour); writes bench/results.md
	$(PY) -m bench.run $(if $(OUT),--out "$(OUT)")

tf-fmt: ## Check Terraform formatting
	terraform fmt -check -recursive terraform

tf-check: $(VENV)/.installed ## Check the Terraform offline against the google provider schema (tfcheck.py)
	@if [ -f ../shared/tools/tfcheck.py ]; then $(PY) ../shared/tools/tfcheck.py terraform; \
	else echo "tf-check: needs the offline schema checker ../shared/tools/tfcheck.py, which ships beside the team's checkout, not in a plain clone."; \
	echo "  Without it: 'make tf-fmt' checks the formatting, and 'make tf-validate' (or terraform init && terraform validate in terraform/environments/dev) checks the rest where the Terraform registry is reachable."; exit 1; fi

tf-validate: ## terraform init -backend=false && validate, per environment (needs the Terraform registry)
	@if ! curl -s -m 5 -o /dev/null https://registry.terraform.io/.well-known/terraform.json; then \
		echo "tf-validate: registry.terraform.io is unreachable from here; skipped (use make tf-check offline)"; exit 0; fi; \
	for env in terraform/environments/*/; do \
		echo "== $$env"; (cd $$env && terraform init -backend=false -input=false >/dev/null && terraform validate) || exit 1; done

clean: ## Remove caches and local run state (keeps .venv and .env)
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
