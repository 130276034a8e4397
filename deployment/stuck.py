"""Bookings that cannot make progress: found, grouped by why, and told.

A booking can be stranded (its version's workers gone; or workers that
cannot replay it, after a change made without a new version): `stuck`
finds such bookings, for the worker's log and metric and the API's
`/readyz`, and `waiting_for` says what one of them waits for.
"""

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import WorkerDeploymentVersion

from deployment.bookings import VERSION, Bookings, open_bookings
from deployment.versions import SERVING, key, routing, version_queues
from shared import DEPLOYMENT_NAME, TASK_QUEUE_NAME

STUCK_AFTER = timedelta(seconds=20)
"""A version's task waiting this long for a worker means its bookings cannot move.

A polling worker takes a task within milliseconds, and one restarting takes
a few seconds; 20 s is neither.
"""

REPORTED_PROBLEMS = "TemporalReportedProblems"
"""What Temporal sets on a run whose workflow task keeps failing (a worker that
cannot replay it); after 5 failures by default, `system.numConsecutiveWorkflow
TaskProblemsToTriggerSearchAttribute`, which `make run`'s server sets to 2."""


@dataclass(frozen=True)
class Stuck:
    """Bookings that cannot make progress, for one reason."""

    reason: str
    bookings: Bookings

    def __str__(self) -> str:
        ids = ", ".join(self.bookings.user_ids)
        more = self.bookings.count - len(self.bookings.user_ids)
        return f"{self.summary}: {ids}{f' and {more} more' if more else ''}"

    @property
    def summary(self) -> str:
        """Say how many, and why, naming no booking (for the public `/readyz`)."""
        return f"{self.bookings.count} {self.reason}"


async def stuck(
    client: Client, deployment_name: str = DEPLOYMENT_NAME, task_queue: str = TASK_QUEUE_NAME
) -> list[Stuck]:
    """Return the bookings on `task_queue` that cannot make progress, grouped by why.

    The groups do not overlap: a booking whose workflow task keeps failing is
    in that group alone.
    """
    on_queue = f'TaskQueue = "{task_queue}"'
    failing = await open_bookings(client, f"{on_queue} AND {REPORTED_PROBLEMS} IS NOT NULL")
    found = [Stuck("bookings whose workflow task keeps failing", failing)] if failing else []
    waiting = f"{on_queue} AND {REPORTED_PROBLEMS} IS NULL"
    known = await routing(client, deployment_name)
    sent_new: list[str] = []  # the versions that new bookings go to, and no worker takes
    for build_id, status in (known.statuses if known else {}).items():
        version = WorkerDeploymentVersion(deployment_name, build_id)
        if status not in SERVING or not await unserved(client, version, task_queue):
            continue
        if pinned := await open_bookings(client, f'{waiting} AND {VERSION} = "{key(version)}"'):
            reason = f"bookings pinned to version {key(version)}, which no worker takes"
            found.append(Stuck(reason, pinned))
        if known is not None and build_id in (known.current, known.ramping):
            sent_new.append(key(version))
    # New bookings are pinned by their first workflow task, which waits too.
    if sent_new and (new := await open_bookings(client, f"{waiting} AND {VERSION} IS NULL")):
        to = " or ".join(sent_new)
        found.append(Stuck(f"new bookings, sent to version {to}, which no worker takes", new))
    return found


async def unserved(client: Client, version: WorkerDeploymentVersion, task_queue: str) -> bool:
    """Return whether a task of `version` on `task_queue` has waited `STUCK_AFTER`, none taken."""
    # An old backlog that tasks still leave is an overloaded fleet, not a missing one.
    return any(
        queue.stats.approximate_backlog_age.ToTimedelta() > STUCK_AFTER
        and not queue.stats.tasks_dispatch_rate
        for queue in await version_queues(client, version, stats=True)
        if queue.name == task_queue
    )


async def waiting_for(
    client: Client, description: WorkflowExecutionDescription, deployment_name: str
) -> str | None:
    """Return what keeps a running booking from moving, if something does."""
    problems = description.raw_description.workflow_execution_info.search_attributes
    if REPORTED_PROBLEMS in problems.indexed_fields:
        return (
            "its workflow task keeps failing: the workers cannot replay it "
            "(a change to the saga deployed without a new version?)"
        )
    pinned = description.raw_description.workflow_execution_info.versioning_info.deployment_version
    if pinned.build_id:
        version = WorkerDeploymentVersion(pinned.deployment_name, pinned.build_id)
        if await unserved(client, version, description.task_queue):
            return f"it is pinned to version {key(version)}, and no worker of that version takes it"
        return None
    known = await routing(client, deployment_name)
    for build_id in (known.current, known.ramping) if known else ():
        version = WorkerDeploymentVersion(deployment_name, build_id or "")
        if build_id and await unserved(client, version, description.task_queue):
            return (
                f"its first workflow task waits for version {key(version)}, which no worker takes"
            )
    return None
