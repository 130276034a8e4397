"""The saga's worker deployment: its versions, and which one new bookings go to.

Each change to the saga's code is a new version (its build id a digest of
the saga's modules, `code_build_id`); a worker makes its version current as
`VersionSettings.set_current` says, and `make deploy` switches otherwise.
"""

import asyncio
import hashlib
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
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentVersionResponse as VersionDescription,
)
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode

from config import PROJECT_DIR, ConfigError
from shared import DEPLOYMENT_NAME

VersionTaskQueue = VersionDescription.VersionTaskQueue

SANDBOXED_CODE = ("workflows.py", "shared.py", "activities.py")
"""The modules whose code decides a booking's commands, what the build id digests:
the saga, its data, and the activities it schedules (their names and inputs)."""

CALL_TIMEOUT = timedelta(seconds=10)
"""How long each call to Temporal's deployment and visibility APIs may take.

Every call is made with the SDK's retries (`retry=True`): a deployment busy
with an update answers RESOURCE_EXHAUSTED ("too many requests issued to
Worker Deployment") for a moment, as when a new version's workers register.
"""

DRAINING = (
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINING,
    WorkerDeploymentVersionStatus.WORKER_DEPLOYMENT_VERSION_STATUS_DRAINED,
)
"""A version that was current or ramping, and is no longer: it only finishes its runs."""

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
    seen = {q.type for q in await version_queues(client, version) if q.name == task_queue}
    return seen >= {TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY}


async def version_queues(
    client: Client, version: WorkerDeploymentVersion, *, stats: bool = False
) -> list[VersionTaskQueue]:
    """Return the task queues that `version` polls (with their stats, if asked); [] if unknown."""
    try:
        response = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=proto(version),
                report_task_queue_stats=stats,
            ),
            retry=True,
            timeout=CALL_TIMEOUT,
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    return list(response.version_task_queues)


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
