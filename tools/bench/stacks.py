"""The stacks the benchmark measures on: a dev server with its worker, and optionally the API."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from api.settings import ACCESS_VARIABLES
from tools.children import Child
from tools.processes import (
    ROOT,
    DevServer,
    ProviderProcess,
    WorkerProcess,
    answers,
    free_port,
    wait_until,
)

QUIET_SIMULATION = {"SIM_LATENCY_SECONDS": "0", "SIM_HOTEL_OUTAGE": "0"}
DEMO_SIMULATION = {"SIM_LATENCY_SECONDS": "0.3", "SIM_HOTEL_OUTAGE": "1"}
"""`make run`'s: the Makefile's latency, and the hotel down on each first attempt."""
PRODUCT_WORKER = ("run_worker.py",)
REFERENCE_WORKER = ("-m", "tools.reference_worker")
"""The same worker with the workflow sandbox off: a tool, never the product."""
UNVERSIONED_WORKER = ("-m", "tools.unversioned_worker")
"""The same worker without a deployment version: what versioning costs."""
HOPLESS_WORKER = ("-m", "tools.hopless_worker")
"""The same worker calling the providers' stores without HTTP: what the hop costs."""


TRACING_PREFIX = "OTEL_"
"""OpenTelemetry's variables: the benchmark alone says which of its processes trace."""


def drop_tracing_variables() -> None:
    """Forget whatever `OTEL_*` the shell exports, so that only a traced stack traces.

    Every process the benchmark starts inherits its environment: an endpoint
    left there would trace every stack, and send the traced one's spans elsewhere.
    """
    for name in [name for name in os.environ if name.startswith(TRACING_PREFIX)]:
        del os.environ[name]


def tracing_env(endpoint: str | None) -> dict[str, str]:
    """Return what a stack's processes get to export their spans to `endpoint` (None: no traces)."""
    return {} if endpoint is None else {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}


def open_api_env() -> dict[str, str]:
    """Return this environment as the benchmarked API gets it: open, on loopback.

    Whatever the shell exports for access (an API_KEYS_FILE would mean 401s).
    """
    return {name: value for name, value in os.environ.items() if name not in ACCESS_VARIABLES}


class Stack:
    """A dev server with its worker, and optionally the API, for the benchmark."""

    def __init__(
        self,
        directory: Path,
        api: bool,
        simulation: dict[str, str] = QUIET_SIMULATION,
        worker: tuple[str, ...] = PRODUCT_WORKER,
        service: bool = False,
        otlp_endpoint: str | None = None,
        **server: bool,
    ) -> None:
        """Start the stack; `otlp_endpoint`: where its worker, providers and API export spans."""
        directory.mkdir(parents=True)
        traced = tracing_env(otlp_endpoint)
        self.server = DevServer(directory, ui=False, **server)
        self.server.start()
        stores = {**simulation, "PROVIDERS_DIR": str(directory / "providers")}
        self.providers: ProviderProcess | None = None
        # The worker serves the providers itself (on a free port), unless they are a service.
        reach = {"PROVIDERS_PORT": "0"}
        if service:
            self.providers = ProviderProcess({**stores, **traced})
            self.providers.start()
            reach = {"PROVIDERS_URL": self.providers.url}
        own = {} if service else stores  # with a service, SIM_* is the providers' alone
        self.worker = WorkerProcess(
            {**own, **reach, **traced, "TEMPORAL_ADDRESS": self.server.address}, worker
        )
        self.worker.start()
        self.api: Child | None = None
        self.api_port = free_port()
        if api:
            # The product's serving settings (processes, threads): what users run.
            self.api = Child(
                [sys.executable, "starter.py"],
                cwd=ROOT,
                env={
                    **traced,
                    "TEMPORAL_ADDRESS": self.server.address,
                    "PORT": str(self.api_port),
                },
                inherit=open_api_env(),
                output="drop",
            )
            healthy = f"http://127.0.0.1:{self.api_port}/healthz"
            wait_until(lambda: answers(healthy), self.api.process, "the API")

    def pids(self) -> dict[str, int]:
        """Return the processes whose CPU the benchmark counts."""
        assert self.server.process is not None
        assert self.worker.process is not None
        pids = {"server": self.server.process.pid, "worker": self.worker.process.pid}
        if self.providers is not None and self.providers.process is not None:
            pids["providers"] = self.providers.process.pid
        if self.api is not None:
            pids["api"] = self.api.process.pid
        return pids

    def stop(self) -> None:
        """Stop everything, even if one part will not stop."""
        try:
            if self.api is not None:
                # Killed if it outlives the wait; the worker and server stop all the same.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.api.stop(30)
        finally:
            try:
                self.worker.stop()
            finally:
                try:
                    if self.providers is not None:
                        self.providers.stop()
                finally:
                    self.server.stop()


STACKS: dict[str, dict[str, Any]] = {
    "tuned": {"api": True},
    "memory": {"api": False, "persistent": False},
    "default": {"api": False, "persistent": False, "tuned": False},
    "reference": {"api": False, "worker": REFERENCE_WORKER},
    "unversioned": {"api": False, "worker": UNVERSIONED_WORKER},
    "hopless": {"api": False, "worker": HOPLESS_WORKER},
    "service": {"api": False, "service": True},
    # make run's: the providers a service of their own, the demo's latency and outage.
    "demo": {"api": True, "simulation": DEMO_SIMULATION, "service": True},
    # The same, its worker, providers and API exporting spans to the benchmark's collector.
    "traced demo": {"api": True, "simulation": DEMO_SIMULATION, "service": True},
}
"""Each stack's options (Stack's and DevServer's): `make run`'s server unless told."""

TRACED_STACKS = frozenset({"traced demo"})
"""The stacks started with `otlp_endpoint`, the collector's (`tools/bench/collector.py`)."""
