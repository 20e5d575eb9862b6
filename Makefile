# driftloop: `make demo` runs the whole loop on the embedded default, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install demo test test-fast test-postgres lint typecheck asyncapi clean bench-gateway \
	bench-ingest bench-load bench-adapt

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

demo: install
	$(BIN)/driftloop demo

# The whole suite (docs/testing.md); ends with the ten slowest test phases. It runs on
# TEST_WORKERS pytest-xdist workers (files sharing a module or package fixture stay together):
# four on two cores, since most of a test's time is spent waiting on the bus, the services'
# timers and subprocesses (one process used 0.75 of a core); TEST_WORKERS=0 is one process.
# PYTEST_ARGS adds options (`-x`, `--junitxml=...`).
TEST_WORKERS ?= 4
test: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared services cli
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=10 $(PYTEST_ARGS)

# Lint and the unit tests (no nats-server, database or MLflow): well under a minute.
test-fast: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests/unit

test-postgres: $(DEV_STAMP)
	DRIFTLOOP_TEST_POSTGRES_URL=$${DRIFTLOOP_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} $(BIN)/python -m pytest -m postgres

lint: $(DEV_STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy shared services cli

asyncapi: install
	$(BIN)/python -m driftloop.shared.asyncapi > docs/asyncapi.json

clean:
	rm -rf $(VENV) .driftloop .pytest_cache

# Drift report vs Evidently's DataDriftPreset (docs/benchmarks.md). Evidently 0.7 needs
# pandas < 3, so it gets a venv of its own; driftloop goes in without its dependencies, plus
# the few its stats module imports, at the project's pins. BENCH_ARGS="--rows 100000" etc.
BENCH_VENV := bench/.venv-evidently
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: bench-drift
bench-drift: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python bench/drift_vs_evidently.py $(BENCH_ARGS)

$(BENCH_STAMP): pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(BENCH_VENV)/bin/python -m pip install --quiet evidently==0.7.23 pandas==2.3.3 \
		numpy==2.4.6 scipy==1.17.1 pydantic==2.14.4 pyyaml==6.0.4
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

# Gateway speed vs `mlflow models serve` and MLServer (issue 6); makes bench/.venv-mlserver itself.
bench-gateway: install
	$(BIN)/python bench/bench_gateway.py $(BENCH_ARGS)

# Monitor ingest from JetStream and its memory over a long stream (issue 5).
bench-ingest: install
	$(BIN)/python bench/bench_ingest.py $(BENCH_ARGS)

# Predict traffic at the gateway's capacity for 10 minutes while a retraining cycle runs:
# 5xx, records and labels lost, p99, every service's RSS (issue 8). A quick check:
# BENCH_ARGS="--duration 60 --retrain-at 10".
bench-load: install
	$(BIN)/python bench/load.py $(BENCH_ARGS)

# Replays nannyml's drifted datasets (wheel fetched into bench/.cache/) through a real
# `driftloop up`, labels a few batches late: served metric vs static vs oracle, the gap
# recovered, retrains before the onset, 5xx (issue 15; ~20 min). A quick look:
# BENCH_ARGS="--scenarios mc --rows 12000 --pre-rows 2000".
bench-adapt: install
	$(BIN)/python bench/adapt.py $(BENCH_ARGS)
