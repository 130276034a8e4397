# The entry point for people: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# For `make run` only (tests and benchmarks set their own): each provider call
# takes this long, so the Web UI's timeline is readable, and the worker serves
# Prometheus metrics here. Override: make run SIM_LATENCY_SECONDS=0
SIM_LATENCY_SECONDS ?= 0.3
WORKER_METRICS_ADDRESS ?= 127.0.0.1:9464

# Where `make deploy`'s new workers and `make audit` find the providers: make run's service.
PROVIDERS_URL ?= http://127.0.0.1:$(or $(PROVIDERS_PORT),3001)

# Where `make api-key` keeps the keys' hashes; the API reads it when API_KEYS_FILE is set.
API_KEYS_FILE ?= api-keys.txt

# `make traces`: the trace viewer's port (its OTLP endpoint for `make run` too) and gRPC port.
TRACES_PORT ?= 6006
TRACES_GRPC_PORT ?= 4317
TRACES_VENV := .venv-traces
TRACES_DIR ?= .traces

.PHONY: run deploy api-key test lint typecheck pytest audit chaos histories screenshots bench traces clean

# The product needs the runtime alone (requirements.txt).
run: $(VENV)/.runtime
	SIM_LATENCY_SECONDS=$(SIM_LATENCY_SECONDS) WORKER_METRICS_ADDRESS=$(WORKER_METRICS_ADDRESS) \
		$(BIN)/python -m tools.stack

# Deploys this checkout's saga as a new version beside the running one, while bookings
# run (docs/operating.md, "Deploying a changed saga"). Options: make deploy DEPLOY_ARGS=--help
deploy: $(VENV)/.runtime
	PROVIDERS_URL=$(PROVIDERS_URL) $(BIN)/python -m tools.deploy $(DEPLOY_ARGS)

# Makes an API key: prints it once, and appends its hash to API_KEYS_FILE (docs/access.md).
api-key: $(VENV)/.runtime
	@$(BIN)/python -m tools.api_key --name "$(NAME)" --role "$(ROLE)" --file "$(API_KEYS_FILE)"

test: lint typecheck pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy .

pytest: $(VENV)/.dev
	$(BIN)/pytest

# Checks every booking in Temporal against the providers' reservations (docs/testing.md, "The audit").
audit: $(VENV)/.runtime
	PROVIDERS_URL=$(PROVIDERS_URL) $(BIN)/python -m tools.audit

# Hundreds of bookings under faults, worker and provider kills, provider freezes and a
# server restart, then the audit.
chaos: $(VENV)/.runtime
	$(BIN)/python -m tools.chaos $(CHAOS_ARGS)

# Re-records tests/histories after a deliberate change to the workflow's commands.
histories: $(VENV)/.dev
	$(BIN)/python -m tools.histories

# Re-takes docs/compensated-booking.png in headless Chromium (apt-get install chromium).
screenshots: $(VENV)/.dev
	$(BIN)/python -m tools.screenshots

# Measures floor vs HTTP vs connect-per-request vs server settings vs the sandbox-off
# reference, and make run's demo saga at 200 concurrent; prints the targets; writes docs/bench.*
bench: $(VENV)/.dev
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

# A trace viewer on this machine, Arize Phoenix, at http://127.0.0.1:$(TRACES_PORT); traces
# kept in .traces. Then: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:6006 make run (docs/tracing.md)
traces: $(TRACES_VENV)/.installed
	PHOENIX_HOST=127.0.0.1 PHOENIX_PORT=$(TRACES_PORT) PHOENIX_GRPC_PORT=$(TRACES_GRPC_PORT) \
		PHOENIX_WORKING_DIR=$(TRACES_DIR) PHOENIX_TELEMETRY_ENABLED=false \
		$(TRACES_VENV)/bin/phoenix serve

# Each reinstalls whenever its requirements file changes.
$(VENV)/.runtime: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(TRACES_VENV)/.installed: requirements-traces.txt
	test -d $(TRACES_VENV) || $(PYTHON) -m venv $(TRACES_VENV)
	$(TRACES_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-traces.txt
	touch $@

clean:
	rm -rf $(VENV) $(TRACES_VENV) .temporal .providers .traces .mypy_cache .pytest_cache .ruff_cache
