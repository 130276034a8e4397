"""The bookings open on a version: counted, sampled, drained, left to people, failing."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion

from deployment.versions import CALL_TIMEOUT, DRAINING, SERVING, key, routing
from shared import BOOKING_STATUS, Outcome

VERSION = "TemporalWorkerDeploymentVersion"
"""Where Temporal keeps the version a run is pinned to (`deployment:build`), for queries."""

DRAIN_GRACE = timedelta(seconds=40)
"""How long a version must have been out of routing before it counts as drained.

Twice `make deploy`'s watch of a new version (20 s), after which the old one
may be put back, so its workers must still be up; and longer than
visibility's lag, so a booking pinned a moment before the switch is counted.
Temporal's own `DRAINED` status waits 3 min by default for the same reasons.
"""


@dataclass(frozen=True)
class Bookings:
    """How many open bookings match, and the ids of the first of them."""

    count: int
    user_ids: list[str]

    def __bool__(self) -> bool:
        return self.count > 0


async def open_bookings(client: Client, query: str, sample: int = 10) -> Bookings:
    """Return the running bookings that `query` (a visibility filter) matches."""
    query = f'WorkflowType = "BookingWorkflow" AND ExecutionStatus = "Running" AND {query}'
    counted = await client.count_workflows(query, rpc_timeout=CALL_TIMEOUT)
    if not counted.count or not sample:
        return Bookings(counted.count, [])
    listing = await client.workflow_service.list_workflow_executions(
        ListWorkflowExecutionsRequest(namespace=client.namespace, query=query, page_size=sample),
        retry=True,
        timeout=CALL_TIMEOUT,
    )
    return Bookings(counted.count, [e.execution.workflow_id for e in listing.executions])


async def pinned_to(client: Client, version: WorkerDeploymentVersion, sample: int = 0) -> Bookings:
    """Return the open bookings pinned to `version`."""
    return await open_bookings(client, f'{VERSION} = "{key(version)}"', sample)


async def waiting_on(client: Client, version: WorkerDeploymentVersion, sample: int = 0) -> Bookings:
    """Return the open bookings pinned to `version` that wait for a person's decision."""
    waits = f'{BOOKING_STATUS.name} = "{Outcome.NEEDS_ATTENTION}"'
    return await open_bookings(client, f'{VERSION} = "{key(version)}" AND {waits}', sample)


async def started_on(client: Client, version: WorkerDeploymentVersion, since: datetime) -> int:
    """Return how many bookings started on `version` since `since`, open or ended."""
    query = (
        f'WorkflowType = "BookingWorkflow" AND {VERSION} = "{key(version)}"'
        f' AND StartTime >= "{since.isoformat()}"'
    )
    return (await client.count_workflows(query, rpc_timeout=CALL_TIMEOUT)).count


async def serving(client: Client, version: WorkerDeploymentVersion) -> bool:
    """Return whether `version` is current, ramping, or draining the bookings it took."""
    known = await routing(client, version.deployment_name)
    return known is not None and known.statuses.get(version.build_id) in SERVING


async def drained(client: Client, version: WorkerDeploymentVersion) -> bool:
    """Return whether `version` is done: out of routing for `DRAIN_GRACE`, no booking open on it."""
    return await out_of_routing(client, version) and not await pinned_to(client, version)


async def left_to_people(client: Client, version: WorkerDeploymentVersion) -> Bookings:
    """Return the bookings open on `version` if every one of them waits for a person (else none).

    Such a version has done all it can alone: its workers stay up for the
    decisions (a booking is pinned to its version), which may take days.
    """
    if not await out_of_routing(client, version):
        return Bookings(0, [])
    waiting = await waiting_on(client, version, sample=10)
    if not waiting or (await pinned_to(client, version)).count != waiting.count:
        return Bookings(0, [])
    return waiting


async def out_of_routing(client: Client, version: WorkerDeploymentVersion) -> bool:
    """Return whether `version` has been out of routing (draining) for `DRAIN_GRACE`."""
    known = await routing(client, version.deployment_name)
    if known is None or known.statuses.get(version.build_id) not in DRAINING:
        return False
    since = known.deactivated.get(version.build_id)
    return since is not None and datetime.now(UTC) - since >= DRAIN_GRACE


async def failing_since(
    client: Client,
    version: WorkerDeploymentVersion,
    task_queue: str,
    since: datetime,
    sample: int = 20,
) -> Bookings:
    """Return the bookings started since `since`, not on another version, whose task failed.

    A workflow task is tried again after it fails: a pending one on its
    second attempt or later has failed (a worker that cannot run the new code).
    """
    query = (
        f'TaskQueue = "{task_queue}" AND StartTime >= "{since.isoformat()}"'
        f' AND ({VERSION} IS NULL OR {VERSION} = "{key(version)}")'
    )
    started = await open_bookings(client, query, sample)
    failing = []
    for user_id in started.user_ids:
        handle = client.get_workflow_handle(user_id)
        described = (await handle.describe(rpc_timeout=CALL_TIMEOUT)).raw_description
        if described.pending_workflow_task.attempt >= 2:
            failing.append(user_id)
    return Bookings(len(failing), failing)
