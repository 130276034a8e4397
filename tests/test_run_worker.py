"""`run_worker.py` as a process: it drains on SIGTERM, finishing the activity in flight."""

import asyncio
import signal
import sys
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from shared import TASK_QUEUE_NAME
from tests.support.histories import activity_runs, eventually
from tests.support.processes import spawn
from tests.support.trips import trip
from tests.support.workers import EXTRA_NAMESPACE
from workflows import BookingWorkflow

STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


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
