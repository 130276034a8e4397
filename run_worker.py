"""The worker process: runs BookingWorkflow and the provider activities."""

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import BookingActivities
from config import PROJECT_DIR, ConfigError, temporal_connect_config
from namespace import NamespaceProblem, prepare
from providers import ProviderStore, Simulation
from shared import TASK_QUEUE_NAME
from workflows import BookingWorkflow

log = logging.getLogger("run_worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=15)
"""On SIGINT/SIGTERM, how long activities in flight may finish before cancellation."""

WORKFLOW_RUNNER = SandboxedWorkflowRunner()
"""The product's workflow runner: Temporal's determinism sandbox, kept on.

`workflows.py` is re-imported into a fresh sandbox for every run, with the
standard library's non-deterministic calls (clock, random, I/O) refused. The
project modules it imports (`shared`, `activities`) it imports passed
through, so they are not re-imported per run; and it keeps its own
module-level work small for the same reason.
"""


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker process serves, and where the providers keep their data."""

    task_queue: str = TASK_QUEUE_NAME
    providers_dir: Path = PROJECT_DIR / ".providers"
    simulation: Simulation = field(default_factory=Simulation)
    metrics_address: str = ""
    """host:port of the Prometheus endpoint; empty: none."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "WorkerSettings":
        """Read TEMPORAL_TASK_QUEUE, PROVIDERS_DIR, WORKER_METRICS_ADDRESS and SIM_*."""
        return cls(
            task_queue=env.get("TEMPORAL_TASK_QUEUE", cls.task_queue),
            providers_dir=Path(env.get("PROVIDERS_DIR", cls.providers_dir)),
            simulation=Simulation.from_env(env),
            metrics_address=env.get("WORKER_METRICS_ADDRESS", cls.metrics_address),
        )


def build_worker(
    client: Client,
    activities: BookingActivities,
    task_queue: str = TASK_QUEUE_NAME,
    *,
    workflow_runner: WorkflowRunner | None = None,
) -> Worker:
    """Return a worker for the saga workflow and its activities.

    Args:
        client: The client to poll with.
        activities: The activities to serve.
        task_queue: The task queue to poll.
        workflow_runner: How workflows run; None: `WORKFLOW_RUNNER`, sandboxed.

    """
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BookingWorkflow],
        activities=activities.all(),
        workflow_runner=workflow_runner or WORKFLOW_RUNNER,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


def open_activities(settings: WorkerSettings) -> BookingActivities:
    """Return the activities over the providers' stores in `settings.providers_dir`."""
    simulation = settings.simulation
    stores = ProviderStore.open_all(settings.providers_dir, simulation.stock())
    return BookingActivities(simulation, stores)


def runtime(metrics_address: str) -> Runtime:
    """Return the SDK runtime: with a Prometheus endpoint if given an address.

    It serves the SDK's own metrics (task latencies, poll counts, slots) and the
    saga's, recorded through `workflow.metric_meter()`, which skips replays.
    """
    if not metrics_address:
        return Runtime.default()
    metrics = PrometheusConfig(bind_address=metrics_address)
    return Runtime(telemetry=TelemetryConfig(metrics=metrics))


async def main(workflow_runner: WorkflowRunner | None = None) -> None:
    """Run the worker until SIGINT or SIGTERM, then drain it.

    `workflow_runner`: as `build_worker`'s (the benchmark's reference worker
    turns the sandbox off; the product never does).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The saga's own lines carry the booking id; the SDK's dict after each is noise.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    settings = WorkerSettings.from_env()
    activities = open_activities(settings)
    config = temporal_connect_config()
    try:
        client = await Client.connect(**config, runtime=runtime(settings.metrics_address))
    except RuntimeError as err:
        raise SystemExit(f"cannot reach Temporal at {config['target_host']}: {err}") from None
    try:
        await prepare(client)  # the search attributes every booking sets
    except NamespaceProblem as err:
        raise SystemExit(str(err)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with build_worker(
        client, activities, settings.task_queue, workflow_runner=workflow_runner
    ):
        log.info("Worker polling task queue %r; Ctrl-C to stop", settings.task_queue)
        await stop.wait()
        log.info("Draining activities in flight (up to %s)", GRACEFUL_SHUTDOWN)
    log.info("Worker stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ConfigError as err:
        sys.exit(f"run_worker: {err}")
