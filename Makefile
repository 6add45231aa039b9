# The front door. Every target sets up what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
REQ_HASH := $(shell sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
UV_VERSION := 0.13.9

DEMO_DAYS ?= 4
DEMO_START ?= 2026-01-01

# Embedded defaults: everything inside the checkout (git-ignored), SQLite everywhere, no servers.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := True
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(CURDIR)/.airflow/airflow.db
export AIRFLOW__LOGGING__LOGGING_LEVEL ?= INFO
export RECSYS_DATA_DIR ?= $(CURDIR)/data
export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := False
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: help venv airflow-home demo screenshots demo-again test test-fast test-closed-loop demo-drift lint format airflow airflow-stop mlflow bench lock up clean system-deps

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || { $(BIN)/python -m ensurepip -q > /dev/null 2>&1 || true; \
	  $(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"; }
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# byte-compile once: with PYTHONDONTWRITEBYTECODE set, every process would recompile TensorFlow (~20 s)
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages > /dev/null 2>&1 || true
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the pinned requirements and the package

$(AIRFLOW_HOME)/.migrated: $(STAMP)
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || (tail -30 $(AIRFLOW_HOME)/migrate.log; exit 1)
	@touch $@

airflow-home: $(AIRFLOW_HOME)/.migrated ## prepare the embedded Airflow home (.airflow/, SQLite)

demo: venv airflow-home ## Airflow (scheduler + api-server) runs recsys_daily and recsys_monitor for DEMO_DAYS days; a summary
	RECSYS_DEMO=1 $(BIN)/recsys demo --days $(DEMO_DAYS) --start $(DEMO_START)

screenshots: venv ## after make demo: docs/img/ screenshots of Airflow, MLflow and the report (needs chromium)
	RECSYS_DEMO=1 $(BIN)/python scripts/screenshots.py

DRIFT_DAYS ?= 8
DRIFT_DAY ?= 2026-01-04
DRIFT_DIR := $(CURDIR)/data-drift
DRIFT_HOME := $(CURDIR)/.airflow-drift

.PHONY: demo-drift
demo-drift: venv ## closed loop: drift on DRIFT_DAY, monitor -> retrain -> recovery (own data-drift/, .airflow-drift/)
	rm -rf $(DRIFT_DIR) $(DRIFT_HOME) && mkdir -p $(DRIFT_HOME)
	export AIRFLOW_HOME=$(DRIFT_HOME) AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(DRIFT_HOME)/airflow.db \
	  RECSYS_DATA_DIR=$(DRIFT_DIR) RECSYS_DEMO=1 RECSYS_TRAIN__TRAIN_EVERY_DAYS=100 \
	  RECSYS_SIMULATOR__SESSIONS_PER_ACTIVE_USER=5 RECSYS_SIMULATOR__EXPLORE_SHARE=0.4 \
	  RECSYS_SIMULATOR__DRIFT='[{"day": "$(DRIFT_DAY)", "kind": "preference_shift", "strength": 1.0}]' && \
	$(BIN)/airflow db migrate > $(DRIFT_HOME)/migrate.log 2>&1 && \
	$(BIN)/recsys demo drift --start $(DEMO_START) --days $(DRIFT_DAYS) --plot $(DRIFT_DIR)/closed_loop.png

test: venv airflow-home system-deps lint ## lint, then the whole test suite
	$(BIN)/pytest

test-closed-loop: venv ## the drift -> monitor -> retrain -> recovery scenario under Airflow (slow)
	$(BIN)/pytest -m closed_loop tests/integration/test_closed_loop.py

test-fast: venv ## unit tests only
	$(BIN)/pytest tests/unit -m "not slow"

system-deps: ## Debian packages some integration tests use (prometheus, pushgateway, docker-compose), if root
	@bash scripts/system-deps.sh

lint: venv ## ruff (lint + format check), import-linter (the package's layers, pyproject.toml)
	$(BIN)/ruff check recsys dags plugins tests bench
	$(BIN)/ruff format --check recsys dags plugins tests bench
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format recsys dags plugins tests bench
	$(BIN)/ruff check --fix recsys dags plugins tests bench

airflow: venv airflow-home ## Airflow UI (:8080) + scheduler on this checkout, in its own process group
	@RECSYS_DEMO=1 bash scripts/airflow-up.sh

airflow-stop: ## stop everything `make airflow` started
	@bash scripts/airflow-stop.sh

mlflow: venv ## MLflow UI on :5000 over the local store
	@mkdir -p $(RECSYS_DATA_DIR)/mlflow
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///$(RECSYS_DATA_DIR)/mlflow/mlflow.db \
	  --default-artifact-root $(RECSYS_DATA_DIR)/mlflow/artifacts

# every bench/*.py (meta.py is their shared helper), at its defaults; `make bench BENCHES="dag_parse score"`
# reruns a subset. Each writes its JSON to bench/results/ with the machine, load average and commit.
# Left out: the ones that measure a day kept by `bench/pipeline.py --keep` (they need its folder:
# train_scale --kept DIR, and the two memory probes train_serving_state and recommend_untrained).
KEPT_DAY_BENCHES = train_scale train_serving_state recommend_untrained
BENCHES ?= $(filter-out meta $(KEPT_DAY_BENCHES),$(basename $(notdir $(wildcard bench/*.py))))

bench: venv ## rerun every benchmark (or BENCHES="a b"); JSON results in bench/results/
	@set -e; for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py; done

lock: ## regenerate requirements.txt from requirements.in (Python 3.11; one lock for every platform, with markers)
	$(BIN)/uv pip compile --universal --python-version 3.11 requirements.in -o requirements.txt

up: ## the production-like stack (needs a Docker engine)
	docker compose up -d

clean: ## remove the demo's data and Airflow home (keeps .venv)
	rm -rf data .airflow
