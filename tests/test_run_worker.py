"""The worker: its runner is the determinism sandbox; as a process, it drains on SIGTERM."""

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio import workflow
from temporalio.api.enums.v1 import IndexedValueType, PendingActivityState
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxedWorkflowRunner,
)

# The sandbox re-imports this module for each ReadsTheClock run: share the rest.
with workflow.unsafe.imports_passed_through():
    import pytest

    from run_worker import (
        WORKFLOW_RUNNER,
        build_worker,
        namespace_problem,
        search_attribute_types,
    )
    from shared import TASK_QUEUE_NAME
    from tests.support.histories import activity_runs, eventually
    from tests.support.processes import spawn
    from tests.support.trips import trip
    from tests.support.workers import EXTRA_NAMESPACE, quick_activities
    from tools.processes import temporal_binary
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


async def bare_namespace(client: Client) -> str:
    """Register a namespace without the saga's search attributes; return it once it answers."""
    namespace = f"bare-{uuid.uuid4()}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace, workflow_execution_retention_period=Duration(seconds=86_400)
        )
    )
    bare = await Client.connect(client.service_client.config.target_host, namespace=namespace)

    async def answers() -> bool:
        try:
            return not await search_attribute_types(bare)
        except RPCError:  # not known to every part of the server yet
            return False

    await eventually(answers)
    return namespace


async def test_worker_stops_at_start_on_a_namespace_without_the_search_attributes_until_created(
    client: Client, address: str, tmp_path: Path
) -> None:
    namespace = await bare_namespace(client)
    env = {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": namespace,
        "PROVIDERS_DIR": str(tmp_path),
    }
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "run_worker.py"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode == 1
    assert "Worker polling" not in refused.stderr + refused.stdout
    assert (
        f"namespace '{namespace}' lacks the search attributes BookingStatus, BookingCustomer, "
        "BookingClient, which every booking sets" in refused.stderr
    )
    lines = [line.strip() for line in refused.stderr.splitlines()]
    [command] = [shlex.split(line) for line in lines if line.startswith("temporal ")]
    assert (
        f'tcld namespace search-attributes add -n {namespace} --sa "BookingStatus=Keyword" '
        '--sa "BookingCustomer=Keyword" --sa "BookingClient=Keyword"' in lines
    )

    # The command it prints is the fix: run it, and the worker starts.
    await asyncio.to_thread(
        subprocess.run,
        [temporal_binary(), *command[1:], "--address", address],
        check=True,
        timeout=60,
    )
    bare = await Client.connect(address, namespace=namespace)
    await eventually(lambda: serves_the_saga(bare))
    worker, output = spawn([sys.executable, "run_worker.py"], env)
    try:
        output.wait_for("Worker polling")
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 30)


async def serves_the_saga(client: Client) -> bool:
    return namespace_problem(client.namespace, await search_attribute_types(client)) is None


KEYWORD, TEXT = (
    IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
)


# The namespace's custom search attributes → what the worker says as it stops (None: it starts).
NAMESPACE_TABLE = [
    pytest.param(
        {}, "lacks the search attributes BookingStatus, BookingCustomer, BookingClient", id="none"
    ),
    pytest.param(
        {"BookingStatus": KEYWORD, "BookingCustomer": KEYWORD, "Other": TEXT},
        "lacks the search attributes BookingClient,",
        id="two_of_three",
    ),
    pytest.param(
        {"BookingStatus": TEXT, "BookingCustomer": KEYWORD, "BookingClient": KEYWORD},
        "has the search attribute BookingStatus as Text, but the saga needs Keyword",
        id="one_of_another_type",
    ),
    pytest.param(
        {"BookingStatus": 99, "BookingCustomer": KEYWORD, "BookingClient": KEYWORD},
        "has the search attribute BookingStatus as type 99, but the saga needs Keyword",
        id="one_of_a_type_this_sdk_does_not_know",
    ),
    pytest.param(
        {"BookingStatus": KEYWORD, "BookingCustomer": KEYWORD, "BookingClient": KEYWORD},
        None,
        id="all_three",
    ),
]


@pytest.mark.parametrize(("types", "says"), NAMESPACE_TABLE)
def test_the_worker_serves_a_namespace_only_with_every_search_attribute_as_a_keyword(
    types: dict[str, int], says: str | None
) -> None:
    problem = namespace_problem("bookings", types)

    if says is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith("namespace 'bookings' ")
        assert says in problem
