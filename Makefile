# The entry point for people: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Each provider call takes this long in `make run`, so the Web UI's timeline is
# readable; tests and benchmarks run with 0. Override: make run SIM_LATENCY_SECONDS=0
SIM_LATENCY_SECONDS ?= 0.3
export SIM_LATENCY_SECONDS
# Where `make run`'s worker serves its Prometheus metrics (the API's are at /metrics).
WORKER_METRICS_ADDRESS ?= 127.0.0.1:9464
export WORKER_METRICS_ADDRESS

.PHONY: run test lint typecheck pytest audit chaos histories screenshots clean

run: $(VENV)/.installed
	$(BIN)/python run_stack.py

test: lint typecheck pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy .

pytest: $(VENV)/.installed
	$(BIN)/pytest

# Checks every booking in Temporal against the providers' stores (README, "The audit").
audit: $(VENV)/.installed
	$(BIN)/python audit.py

# Hundreds of bookings under faults, worker kills and a server restart, then the audit.
chaos: $(VENV)/.installed
	$(BIN)/python chaos.py $(CHAOS_ARGS)

# Re-records tests/histories after a deliberate change to the workflow's commands.
histories: $(VENV)/.installed
	PYTHONPATH=.:tests $(BIN)/python tests/record_histories.py

# Re-takes docs/compensated-booking.png in headless Chromium (apt-get install chromium).
screenshots: $(VENV)/.installed
	PYTHONPATH=.:tests $(BIN)/python tests/take_screenshots.py

# Reinstalls whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .temporal .providers .mypy_cache .pytest_cache .ruff_cache
