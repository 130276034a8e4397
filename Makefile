# The entry point for people: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# For `make run` only (tests and benchmarks set their own): each provider call
# takes this long, so the Web UI's timeline is readable, and the worker serves
# Prometheus metrics here. Override: make run SIM_LATENCY_SECONDS=0
SIM_LATENCY_SECONDS ?= 0.3
WORKER_METRICS_ADDRESS ?= 127.0.0.1:9464

.PHONY: run test lint typecheck pytest audit chaos histories screenshots bench clean

run: $(VENV)/.installed
	SIM_LATENCY_SECONDS=$(SIM_LATENCY_SECONDS) WORKER_METRICS_ADDRESS=$(WORKER_METRICS_ADDRESS) \
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

# Measures floor vs HTTP vs connect-per-request vs server settings; writes docs/bench.*
bench: $(VENV)/.installed
	$(BIN)/python bench.py $(BENCH_ARGS)

# Reinstalls whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV) .temporal .providers .mypy_cache .pytest_cache .ruff_cache
