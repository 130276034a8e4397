"""The saga's worker deployment: its versions, the current one, and bookings that cannot move.

Each change to the saga's code is a new version of the deployment (its build
id is a digest of the saga's modules, `code_build_id`), and
every booking is pinned to the version it started on: a run never meets
code other than its own, so a changed saga is deployed while bookings run.
New bookings go to the deployment's current version; an old version drains
as its bookings end (docs/operating.md, "Deploying a changed saga").

A booking can still be stranded (its version's workers gone; or workers
that cannot replay it, after a change made without a new version):
`stuck` finds such bookings, for the worker's log and metric and the API's
`/readyz`, and `waiting_for` says what one of them waits for.
"""

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import TaskQueueType, WorkerDeploymentVersionStatus
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    ListWorkflowExecutionsRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode

from config import PROJECT_DIR, ConfigError
from shared import DEPLOYMENT_NAME, TASK_QUEUE_NAME

log = logging.getLogger("deployment")

SANDBOXED_CODE = ("workflows.py", "shared.py", "activities.py")
"""The modules whose code decides a booking's commands, what the build id digests:
the saga, its data, and the activities it schedules (their names and inputs)."""

CALL_TIMEOUT = timedelta(seconds=10)
"""How long each call to Temporal's deployment and visibility APIs may take.

Every call is made with the SDK's retries (`retry=True`): a deployment busy
with an update answers RESOURCE_EXHAUSTED ("too many requests issued to
Worker Deployment") for a moment, as when a new version's workers register.
"""

STUCK_AFTER = timedelta(seconds=20)
"""A version's task waiting this long for a worker means its bookings cannot move.

A polling worker takes a task within milliseconds, and one restarting takes
a few seconds; 20 s is neither.
"""

VERSION = "TemporalWorkerDeploymentVersion"
"""Where Temporal keeps the version a run is pinned to (`deployment:build`), for queries."""

REPORTED_PROBLEMS = "TemporalReportedProblems"
"""What Temporal sets on a run whose workflow task keeps failing (a worker that
cannot replay it); after 5 failures by default, `system.numConsecutiveWorkflow
TaskProblemsToTriggerSearchAttribute`, which `make run`'s server sets to 2."""

DRAINING = (
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED,
)
"""A version that was current or ramping, and is no longer: it only finishes its runs."""

DRAIN_GRACE = timedelta(seconds=40)
"""How long a version must have been out of routing before it counts as drained.

Twice `make deploy`'s watch of a new version (20 s), after which the old one
may be put back, so its workers must still be up; and longer than
visibility's lag, so a booking pinned a moment before the switch is counted.
Temporal's own `DRAINED` status waits 3 min by default for the same reasons.
"""

SERVING = (
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_RAMPING,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING,
)
"""The versions that can have open bookings."""


class SetCurrent(StrEnum):
    """When a starting worker makes its own version the current one."""

    IF_NONE = "if-none"
    """The first deploy only: later ones are `make deploy`'s (the default)."""
    ALWAYS = "always"
    """Every start (`make run`, where a restart after an edit deploys the edit)."""
    NEVER = "never"
    """Never (`make deploy`'s new workers: it switches once they poll)."""


def code_build_id(root: Path = PROJECT_DIR) -> str:
    """Return the build id of the saga's code here: `saga-` and a digest of `SANDBOXED_CODE`."""
    digest = hashlib.sha256()
    for name in SANDBOXED_CODE:
        digest.update((root / name).read_bytes().replace(b"\r\n", b"\n"))  # a Windows checkout
    return f"saga-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class VersionSettings:
    """The worker's version, and when it makes that version current."""

    deployment_name: str = DEPLOYMENT_NAME
    build_id: str = field(default_factory=code_build_id)
    set_current: SetCurrent = SetCurrent.IF_NONE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "VersionSettings":
        """Read WORKER_DEPLOYMENT_NAME, WORKER_BUILD_ID and WORKER_SET_CURRENT."""
        name = name_from_env(env, "WORKER_DEPLOYMENT_NAME", DEPLOYMENT_NAME)
        build_id = name_from_env(env, "WORKER_BUILD_ID", "") or code_build_id()
        when = env.get("WORKER_SET_CURRENT", SetCurrent.IF_NONE)
        if when not in SetCurrent.__members__.values():
            choices = ", ".join(SetCurrent)
            raise ConfigError(f"WORKER_SET_CURRENT must be one of {choices}, not {when!r}")
        return cls(name, build_id, SetCurrent(when))

    @property
    def version(self) -> WorkerDeploymentVersion:
        """Return the version the worker polls as."""
        return WorkerDeploymentVersion(self.deployment_name, self.build_id)


def name_from_env(env: Mapping[str, str], variable: str, default: str) -> str:
    """Read a deployment's or a build's name; empty only if `default` is."""
    value = env.get(variable, default) or default
    if value and (any(c in value for c in ':."\\') or not value.isprintable()):
        raise ConfigError(f'{variable} must be a name without : . " or \\, not {value!r}')
    return value


def key(version: WorkerDeploymentVersion) -> str:
    """Return `version` as the `TemporalWorkerDeploymentVersion` search attribute holds it."""
    return f"{version.deployment_name}:{version.build_id}"


@dataclass(frozen=True)
class Routing:
    """Where a deployment sends new bookings, and the state of each of its versions."""

    current: str | None
    """The current version's build id; None: no version is current (unversioned)."""
    ramping: str | None
    ramp_percentage: float
    statuses: dict[str, int]
    """Each version's `WorkerDeploymentVersionStatus`, by build id."""
    conflict_token: bytes
    deactivated: dict[str, datetime] = field(default_factory=dict)
    """When each version that was current or ramping stopped being so, by build id."""


async def routing(client: Client, deployment_name: str) -> Routing | None:
    """Return the deployment's routing; None if no worker of it ever polled."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name
            ),
            retry=True,
            timeout=CALL_TIMEOUT,
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.worker_deployment_info
    config = info.routing_config
    return Routing(
        current=config.current_deployment_version.build_id or None,
        ramping=config.ramping_deployment_version.build_id or None,
        ramp_percentage=config.ramping_version_percentage,
        statuses={s.deployment_version.build_id: s.status for s in info.version_summaries},
        conflict_token=response.conflict_token,
        deactivated={
            s.deployment_version.build_id: s.last_deactivation_time.ToDatetime(UTC)
            for s in info.version_summaries
            if s.HasField("last_deactivation_time")
        },
    )


async def polls(
    client: Client, version: WorkerDeploymentVersion, task_queue: str, since: datetime
) -> bool:
    """Return whether a worker of `version` has polled `task_queue` since `since`.

    Its two queues must be registered to the version (as they stay after its
    workers have gone: a build id deployed before), and one of its workers
    must be among the workflow queue's pollers since then.
    """
    if not await registered(client, version, task_queue):
        return False
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        retry=True,
        timeout=CALL_TIMEOUT,
    )
    return any(
        poller.deployment_options.build_id == version.build_id
        and poller.deployment_options.deployment_name == version.deployment_name
        and poller.last_access_time.ToDatetime(UTC) >= since - CLOCK_SKEW
        for poller in response.pollers
    )


async def registered(client: Client, version: WorkerDeploymentVersion, task_queue: str) -> bool:
    """Return whether `task_queue`'s two queues belong to `version`."""
    try:
        response = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace, deployment_version=proto(version)
            ),
            retry=True,
            timeout=CALL_TIMEOUT,
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    seen = {q.type for q in response.version_task_queues if q.name == task_queue}
    return seen >= {TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}


async def set_current(
    client: Client, version: WorkerDeploymentVersion, conflict_token: bytes, identity: str
) -> None:
    """Make `version` current: new bookings start on it (and a ramp, if any, ends)."""
    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=version.deployment_name,
            build_id=version.build_id,
            conflict_token=conflict_token,
            identity=identity,
        ),
        retry=True,
        timeout=CALL_TIMEOUT,
    )


async def set_ramping(
    client: Client,
    version: WorkerDeploymentVersion,
    percentage: float,
    conflict_token: bytes,
    identity: str,
) -> None:
    """Send `percentage` of new bookings to `version`; 0 % ends the ramp."""
    await client.workflow_service.set_worker_deployment_ramping_version(
        SetWorkerDeploymentRampingVersionRequest(
            namespace=client.namespace,
            deployment_name=version.deployment_name,
            build_id=version.build_id if percentage else "",
            percentage=percentage,
            conflict_token=conflict_token,
            identity=identity,
        ),
        retry=True,
        timeout=CALL_TIMEOUT,
    )


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
    known = await routing(client, version.deployment_name)
    if known is None or known.statuses.get(version.build_id) not in DRAINING:
        return False
    since = known.deactivated.get(version.build_id)
    if since is None or datetime.now(UTC) - since < DRAIN_GRACE:
        return False
    return (await pinned_to(client, version)).count == 0


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
    try:
        response = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=proto(version),
                report_task_queue_stats=True,
            ),
            retry=True,
            timeout=CALL_TIMEOUT,
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    # An old backlog that tasks still leave is an overloaded fleet, not a missing one.
    return any(
        queue.stats.approximate_backlog_age.ToTimedelta() > STUCK_AFTER
        and not queue.stats.tasks_dispatch_rate
        for queue in response.version_task_queues
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


CLOCK_SKEW = timedelta(seconds=5)
"""How far this machine's clock may be from the server's, when comparing their times."""

POLL_SEEN_WITHIN = timedelta(seconds=30)
"""How long a started worker's version may take to show up in its deployment (0.4 s here)."""


class VersionProblem(Exception):
    """The deployment cannot do what was asked of it; the message says why."""


async def await_polls(
    client: Client,
    version: WorkerDeploymentVersion,
    task_queue: str,
    within: timedelta = POLL_SEEN_WITHIN,
    since: datetime | None = None,
) -> None:
    """Return once a worker of `version` polls `task_queue` since `since` (None: now).

    Raises `VersionProblem` if none does `within` the time given.
    """
    since = since or datetime.now(UTC)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within.total_seconds()
    while not await polls(client, version, task_queue, since):
        if loop.time() > deadline:
            raise VersionProblem(f"Temporal saw no worker of {key(version)} poll within {within}")
        await asyncio.sleep(0.2)


async def take_current(
    client: Client, settings: VersionSettings, task_queue: str, since: datetime | None = None
) -> str:
    """Make the worker's version current if `settings.set_current` says so; say what stands.

    Call it once the worker polls (since `since`: its start). A conflict
    (another worker switched between our read and our write) is read again,
    so the last writer knows who won.
    Raises `VersionProblem` or `RPCError` if it cannot say yet: try again later.
    """
    version = settings.version
    await await_polls(client, version, task_queue, since=since)
    for attempt in range(3):
        known = await routing(client, version.deployment_name)
        if known is None:  # seen polling, the deployment is not yet described
            raise VersionProblem(f"the deployment of {key(version)} is not visible yet")
        current = known.current
        if current == version.build_id:
            return f"Version {key(version)} is current"
        wanted = settings.set_current == SetCurrent.ALWAYS or (
            settings.set_current == SetCurrent.IF_NONE and current is None
        )
        if not wanted:
            return (
                f"Version {key(version)} waits to be made current (`make deploy`, "
                f"docs/operating.md); new bookings go to {current}"
            )
        try:
            await set_current(client, version, known.conflict_token, client.identity)
        except RPCError as err:
            if err.status not in (RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.ABORTED):
                raise VersionProblem(f"cannot make {key(version)} current: {err.message}") from err
            await asyncio.sleep(0.5 * (attempt + 1))
            continue
        return f"Version {key(version)} is now current (was {current or 'none'})"
    raise VersionProblem(f"cannot make {key(version)} current: the deployment keeps changing")


def proto(version: WorkerDeploymentVersion) -> VersionProto:
    """Return `version` as the API's message."""
    return VersionProto(deployment_name=version.deployment_name, build_id=version.build_id)
