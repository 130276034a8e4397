"""The worker process: runs BookingWorkflow and the provider activities."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from temporalio import activity, workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import Client
from temporalio.converter import SerializationContext, StorageDriverStoreContext
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import BookingActivities
from config import PROJECT_DIR, ConfigError, temporal_connect_config
from providers import ProviderStore, Simulation
from shared import TASK_QUEUE_NAME
from workflows import BookingWorkflow

if TYPE_CHECKING:
    from temporalio.worker._command_aware_visitor import CommandInfo

log = logging.getLogger("run_worker")
T = TypeVar("T")

GRACEFUL_SHUTDOWN = timedelta(seconds=15)
"""On SIGINT/SIGTERM, how long activities in flight may finish before cancellation."""


PASSED_THROUGH = ("shared", "activities")
"""The project's modules the workflow shares with the host instead of re-importing
them per run: data and constants, and the activities it only names, never calls
(what they import is then loaded outside the sandbox too)."""


class _RememberingContexts(WorkflowInstance):
    """A sandboxed run that asks the sandbox for a command's payload context once per activation.

    The worker asks a run for a command's serialization context three or four
    times for every payload it encodes or decodes, and in the sandbox each ask
    is a trip into it (an `exec`): about 37 trips and 3.5 ms of CPU a booking,
    more than re-importing the workflow. A command's context changes only when
    the command resolves, which happens only during an activation, so the
    answers are remembered until the next one.
    """

    def __init__(self, sandboxed: WorkflowInstance) -> None:
        self._sandboxed = sandboxed
        self._contexts: dict[CommandInfo | None, SerializationContext | None] = {}
        self._stores: dict[CommandInfo | None, StorageDriverStoreContext] = {}

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        # The run's own context (no command) depends only on its info: it stays.
        self._contexts = _run_own(self._contexts)
        self._stores = _run_own(self._stores)
        return self._sandboxed.activate(act)

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> SerializationContext | None:
        if command_info not in self._contexts:
            self._contexts[command_info] = self._sandboxed.get_serialization_context(command_info)
        return self._contexts[command_info]

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        if command_info not in self._stores:
            self._stores[command_info] = self._sandboxed.get_external_store_context(command_info)
        return self._stores[command_info]

    def get_info(self) -> workflow.Info:
        return self._sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        return self._sandboxed.get_thread_id()


def _run_own(answers: dict[CommandInfo | None, T]) -> dict[CommandInfo | None, T]:
    return {None: answers[None]} if None in answers else {}


class SandboxRunner(SandboxedWorkflowRunner):
    """Temporal's sandbox, with each run's payload contexts remembered per activation."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """Return the sandboxed run, wrapped."""
        return _RememberingContexts(super().create_instance(det))


WORKFLOW_RUNNER = SandboxRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
)
"""The product's workflow runner: Temporal's determinism sandbox, kept on.

`workflows.py` itself is still re-imported into a fresh sandbox for every run,
with the standard library's non-deterministic calls (clock, random, I/O)
refused; only the modules above are shared, so they are not re-imported per
run. `workflows.py` keeps its module-level work small for the same reason, and
each run remembers its payload contexts (`_RememberingContexts`).
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
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerSettings:
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


async def main() -> None:
    """Run the worker until SIGINT or SIGTERM, then drain it."""
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with build_worker(client, activities, settings.task_queue):
        log.info("Worker polling task queue %r; Ctrl-C to stop", settings.task_queue)
        await stop.wait()
        log.info("Draining activities in flight (up to %s)", GRACEFUL_SHUTDOWN)
    log.info("Worker stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ConfigError as err:
        sys.exit(f"run_worker: {err}")
