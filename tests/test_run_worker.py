"""The worker: its runner is the determinism sandbox; as a process, it drains on SIGTERM."""

import asyncio
import dataclasses
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowFailureError
from temporalio.converter import (
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Worker, WorkflowRunner
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


class ContextRecorder(PayloadCodec, WithSerializationContext):
    """A codec that changes nothing and counts the payloads it sees, by their context."""

    def __init__(self, seen: Counter[str], context: SerializationContext | None = None) -> None:
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> "ContextRecorder":
        return ContextRecorder(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._count("encode", payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._count("decode", payloads)

    def _count(self, way: str, payloads: Sequence[Payload]) -> list[Payload]:
        activity = getattr(self.context, "activity_type", "")
        self.seen[f"{way} {type(self.context).__name__} {activity}"] += len(payloads)
        return list(payloads)


async def contexts_seen(client: Client, directory: Path, runner: WorkflowRunner) -> Counter[str]:
    """Run a booking that books the car, fails at the hotel and undoes both; count contexts."""
    seen: Counter[str] = Counter()
    codec = ContextRecorder(seen)
    converter = dataclasses.replace(DataConverter.default, payload_codec=codec)
    config = client.config()
    config["data_converter"] = converter
    recording = Client(**config)
    task_queue = f"test-{uuid.uuid4()}"
    booking = trip(hotel="invalid-hotel-id")
    activities = quick_activities(directory)
    async with build_worker(recording, activities, task_queue, workflow_runner=runner):
        await recording.execute_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
    return seen


async def test_the_product_runner_gives_each_payload_the_sandbox_s_context(
    client: Client, tmp_path: Path
) -> None:
    plain = SandboxedWorkflowRunner(restrictions=WORKFLOW_RUNNER.restrictions)
    expected = await contexts_seen(client, tmp_path / "plain", plain)
    assert await contexts_seen(client, tmp_path / "product", WORKFLOW_RUNNER) == expected
    assert expected["encode ActivitySerializationContext undo_book_car"] > 0


async def test_worker_finishes_the_activity_in_flight_on_sigterm_and_exits_0(
    address: str, tmp_path: Path
) -> None:
    worker, output = spawn(
        [sys.executable, "run_worker.py"],
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": EXTRA_NAMESPACE,
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
