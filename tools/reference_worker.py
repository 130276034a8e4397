"""The benchmark's reference worker: `run_worker.py`'s worker with the workflow sandbox off.

A tool, never the product: the sandbox is what catches non-deterministic
workflow code, and the product keeps it. `make bench` runs the same saga on
this worker to measure what the sandbox costs ("floor, sandbox off").
"""

import argparse
import asyncio
import logging
import signal
import sys

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner

import run_worker
from config import ConfigError, temporal_connect_config

log = logging.getLogger("reference_worker")


async def main() -> None:
    """Run the unsandboxed worker until SIGINT or SIGTERM, then drain it."""
    # Logged as run_worker.py logs, so the two differ in the sandbox alone.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    settings = run_worker.WorkerSettings.from_env()
    activities = run_worker.open_activities(settings)
    client = await Client.connect(
        **temporal_connect_config(), runtime=run_worker.runtime(settings.metrics_address)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    unsandboxed = UnsandboxedWorkflowRunner()
    async with run_worker.build_worker(
        client, activities, settings.task_queue, workflow_runner=unsandboxed
    ):
        # tools.processes.WorkerProcess waits for "Worker polling".
        log.info("Worker polling task queue %r, sandbox off", settings.task_queue)
        await stop.wait()
    log.info("Worker stopped")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    try:
        asyncio.run(main())
    except ConfigError as err:
        sys.exit(f"reference_worker: {err}")
