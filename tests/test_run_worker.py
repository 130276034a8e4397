"""The worker: its runner is the determinism sandbox; as a process, it drains on SIGTERM."""

import asyncio
import signal
import socket
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxedWorkflowRunner,
)

# The sandbox re-imports this module for each ReadsTheClock run: share the rest.
with workflow.unsafe.imports_passed_through():
    import pytest

    from run_worker import WORKFLOW_RUNNER, build_worker
    from shared import TASK_QUEUE_NAME
    from tests.support.histories import activity_runs, eventually
    from tests.support.processes import spawn
    from tests.support.trips import trip
    from tests.support.workers import EXTRA_NAMESPACE, quick_activities
    from workflows import BookingWorkflow

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


@workflow.defn(name="ReadsTheClock")
class ReadsTheClock:
    """Workflow code as a careless change might write it: it reads the wall clock."""

    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()


async def test_build_worker_runs_the_saga_in_the_sandbox_re_importing_workflows_py(
    tmp_path: Path, client: Client
) -> None:
    worker = build_worker(client, quick_activities(tmp_path), f"test-{uuid.uuid4()}")
    runner = worker.config()["workflow_runner"]
    assert runner is WORKFLOW_RUNNER
    assert isinstance(runner, SandboxedWorkflowRunner)
    # The saga's own module is never shared with the host: each run imports it
    # afresh, with the clock, randomness and I/O refused.
    assert not runner.restrictions.passthrough_all_modules
    assert "workflows" not in runner.restrictions.passthrough_modules


async def test_the_product_runner_refuses_a_non_deterministic_call(client: Client) -> None:
    task_queue = f"test-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[ReadsTheClock],
        workflow_runner=WORKFLOW_RUNNER,
        # Fail the run at once instead of retrying the task until the timeout.
        workflow_failure_exception_types=[RestrictedWorkflowAccessError],
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                ReadsTheClock.run,
                id=f"clock-{uuid.uuid4()}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=30),
            )
    assert "datetime.datetime.now" in str(failure.value.cause)


async def test_worker_finishes_the_activity_in_flight_on_sigterm_and_exits_0(
    address: str, tmp_path: Path
) -> None:
    worker, output = spawn(
        [sys.executable, "run_worker.py"],
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": EXTRA_NAMESPACE,
            "PROVIDERS_PORT": "0",
            "PROVIDERS_DIR": str(tmp_path),
            "SIM_LATENCY_SECONDS": "2",
        },
    )
    client = await Client.connect(address, namespace=EXTRA_NAMESPACE)
    try:
        output.wait_for("Worker polling")
        handle = await client.start_workflow(
            BookingWorkflow.run, trip(), id=trip().book_user_id, task_queue=TASK_QUEUE_NAME
        )

        async def book_car_started() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(a.state == STARTED for a in pending)

        await eventually(book_car_started)
        worker.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(worker.wait, 30)
    finally:
        worker.kill()
    await handle.terminate("test over: no worker left")

    assert status == 0, "".join(output.lines)
    assert (await activity_runs(handle))[0] == ("book_car", 1, "completed")
    assert "Worker stopped" in "".join(output.lines)


def test_a_second_worker_serving_providers_on_a_taken_port_exits_saying_to_share_them(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker, output = spawn(
            [sys.executable, "run_worker.py"],
            {"PROVIDERS_PORT": str(port), "PROVIDERS_DIR": str(tmp_path)},
        )
        status = worker.wait(30)

    assert status == 1
    said = output.text().strip()
    assert said.endswith(
        f"run_worker: cannot serve the providers on 127.0.0.1:{port}: the port is taken. "
        "For several workers, run `python providers.py` on its own and give each worker "
        "PROVIDERS_URL (docs/providers.md)"
    )
