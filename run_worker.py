"""The worker process: runs BookingWorkflow and the provider activities."""

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import urlsplit

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import MetricMeter, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkerDeploymentConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import BookingActivities, ProviderClient
from config import ConfigError, temporal_connect_config
from deployment.bookings import drained, serving
from deployment.stuck import stuck
from deployment.versions import VersionProblem, VersionSettings, code_build_id, key, take_current
from namespace import NamespaceProblem, prepare
from providers import ProviderSettings, serve
from shared import TASK_QUEUE_NAME
from tracing.instrument import temporal_plugins, trace_aiohttp
from tracing.provider import start_tracing, stop_tracing
from workflows import VERSIONING, BookingWorkflow

log = logging.getLogger("run_worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=15)
"""On SIGINT/SIGTERM, how long activities in flight may finish before cancellation."""

WATCH_EVERY = timedelta(seconds=10)
"""How often the worker looks for stuck bookings, and whether its version has drained."""


WORKFLOW_RUNNER = SandboxedWorkflowRunner()
"""The product's workflow runner: Temporal's determinism sandbox, kept on.

`workflows.py` is re-imported into a fresh sandbox for every run, with the standard
library's non-deterministic calls (clock, random, I/O) refused; what it imports of the
project and of OpenTelemetry is passed through, not re-imported per run.
"""


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker process serves, and which providers it calls."""

    task_queue: str = TASK_QUEUE_NAME
    providers_url: str = ""
    """The provider service's URL; empty: the worker serves the providers itself."""
    providers: ProviderSettings = field(default_factory=ProviderSettings)
    """How the worker serves the providers when it has no `providers_url`."""
    metrics_address: str = ""
    """host:port of the Prometheus endpoint; empty: none."""
    version: VersionSettings = field(default_factory=VersionSettings)
    ignored: tuple[str, ...] = ()
    """SIM_* variables set beside PROVIDERS_URL: the providers read them, not this worker."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "WorkerSettings":
        """Read TEMPORAL_TASK_QUEUE, PROVIDERS_URL, WORKER_METRICS_ADDRESS, WORKER_*.

        Without PROVIDERS_URL, also the providers' own settings (PROVIDERS_PORT,
        PROVIDERS_DIR, SIM_*), to serve them.
        """
        url = env.get("PROVIDERS_URL", "")
        if url:
            check_providers_url(url)
        return cls(
            task_queue=env.get("TEMPORAL_TASK_QUEUE", cls.task_queue),
            providers_url=url,
            providers=ProviderSettings() if url else ProviderSettings.from_env(env),
            ignored=tuple(sorted(name for name in env if url and name.startswith("SIM_"))),
            metrics_address=env.get("WORKER_METRICS_ADDRESS", cls.metrics_address),
            version=VersionSettings.from_env(env),
        )


def check_providers_url(url: str) -> None:
    """Refuse a PROVIDERS_URL that every call would fail on: ConfigError, naming it."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port != 0
    except ValueError:  # not a number, or past 65535
        port_ok = False
    usable = parts.scheme in ("http", "https") and parts.hostname and port_ok
    if not usable or parts.query or parts.fragment:
        raise ConfigError(
            f"PROVIDERS_URL must be an http(s) URL, as http://providers.internal:3001, not {url!r}"
        )


def build_worker(
    client: Client,
    activities: BookingActivities,
    task_queue: str = TASK_QUEUE_NAME,
    *,
    workflow_runner: WorkflowRunner | None = None,
    version: WorkerDeploymentVersion | None = None,
    max_cached_workflows: int = 1000,
) -> Worker:
    """Return a worker for the saga workflow and its activities.

    Args:
        client: The client to poll with.
        activities: The activities to serve.
        task_queue: The task queue to poll.
        workflow_runner: How workflows run; None: `WORKFLOW_RUNNER`, sandboxed.
        version: The worker deployment version it polls as; None: unversioned
            (the tests' workers, each on a task queue of its own).
        max_cached_workflows: The SDK's default; 0: each task replays the history (tests).

    """
    deployment = None
    if version is not None:
        deployment = WorkerDeploymentConfig(
            version=version, use_worker_versioning=True, default_versioning_behavior=VERSIONING
        )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BookingWorkflow],
        activities=activities.all(),
        workflow_runner=workflow_runner or WORKFLOW_RUNNER,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        deployment_config=deployment,
        max_cached_workflows=max_cached_workflows,
    )


@asynccontextmanager
async def open_activities(settings: WorkerSettings) -> AsyncIterator[BookingActivities]:
    """Yield the activities, calling the providers at PROVIDERS_URL or, unset, served here."""
    async with AsyncExitStack() as stack:
        url = settings.providers_url
        if not url:
            url = await stack.enter_async_context(serve(settings.providers))
            log.info("Serving the providers in this process at %s (PROVIDERS_URL is unset)", url)
        else:
            log.info("Calling the providers at %s", url)
        if settings.ignored:
            names = ", ".join(settings.ignored)
            log.warning("Not read here: %s (the providers at PROVIDERS_URL read them)", names)
        providers = ProviderClient(url)
        stack.push_async_callback(providers.close)
        if not await providers.healthy():
            # Not fatal: each booking's calls are retried until the providers answer.
            log.warning("The providers at %s do not answer yet; their calls will be retried", url)
        yield BookingActivities(providers)


def runtime(metrics_address: str) -> Runtime:
    """Return the SDK runtime: with a Prometheus endpoint if given an address.

    It serves the SDK's metrics (task latencies, polls, slots) and the saga's
    (`workflow.metric_meter()`, which skips replays).
    """
    if not metrics_address:
        return Runtime.default()
    metrics = PrometheusConfig(bind_address=metrics_address)
    return Runtime(telemetry=TelemetryConfig(metrics=metrics))


async def look_after_version(
    client: Client, settings: WorkerSettings, meter: MetricMeter, stop: asyncio.Event
) -> None:
    """Take the version current if told to; then report stuck bookings until it drains.

    Returns once the version, having served since this worker started, has
    drained (replaced as current, and no booking left pinned to it): its
    worker has nothing more to do. A worker of a version that drained before
    it started waits instead, to be made current again (a deploy back to it).
    Temporal's errors are logged and the look tried again: the worker serves
    meanwhile.
    """
    version = settings.version
    started = datetime.now(UTC)
    served = False
    code = code_build_id()
    while True:
        try:
            said = await take_current(client, version, settings.task_queue, since=started)
            log.info("%s", said)
            break
        except (RPCError, VersionProblem) as err:
            log.warning(
                "Cannot settle version %s yet (%s); trying again", key(version.version), err
            )
            if await stopped(stop, WATCH_EVERY):
                return
    gauge = meter.create_gauge("saga_bookings_stuck", "open bookings that cannot make progress")
    reported = ""
    while not await stopped(stop, WATCH_EVERY):
        try:
            found = await stuck(client, version.deployment_name, settings.task_queue)
            served = served or await serving(client, version.version)
            done = served and await drained(client, version.version)
        except RPCError as err:
            log.warning("Cannot read the deployment (%s); trying again", err.message)
            continue
        gauge.set(sum(group.bookings.count for group in found))
        if code and (edited := code_build_id()) != code:
            # The sandbox reads workflows.py afresh for each run: the edit is live, unversioned.
            log.warning(
                "The saga's code changed on disk (now %s): new bookings run it as version %s; "
                "restart this worker, or `make deploy` the change (docs/operating.md)",
                edited,
                key(version.version),
            )
            code = ""  # said once
        now = "; ".join(map(str, found))
        if now != reported:
            if now:
                log.warning('Stuck: %s (docs/operating.md, "Stuck bookings")', now)
            else:
                log.info("No booking is stuck any more")
            reported = now
        if done:
            log.info("Version %s has drained: no booking is left on it", key(version.version))
            return


async def stopped(stop: asyncio.Event, within: timedelta) -> bool:
    """Return whether `stop` is set `within` the given time."""
    try:
        await asyncio.wait_for(stop.wait(), within.total_seconds())
    except TimeoutError:
        return False
    return True


OpenActivities = Callable[[WorkerSettings], AbstractAsyncContextManager[BookingActivities]]
"""Opens the worker's activities from its settings (`open_activities`)."""


async def main(
    workflow_runner: WorkflowRunner | None = None,
    *,
    versioned: bool = True,
    activities_from: OpenActivities = open_activities,
) -> None:
    """Run the worker until SIGINT or SIGTERM, or until its version has drained; then drain it.

    For the tools only, never the product: `workflow_runner` as `build_worker`'s
    (the benchmark's reference worker turns the sandbox off); `versioned=False`,
    no deployment version (`tools/unversioned_worker.py`); `activities_from`, how
    the activities reach the providers (`tools/hopless_worker.py`: no HTTP).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The saga's own lines carry the booking id; the SDK's dict after each is noise.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    settings = WorkerSettings.from_env()
    tracing = start_tracing("trip-booking-worker")
    if tracing:
        trace_aiohttp()  # before the providers served here are built
    # The providers first: a port taken here is said before Temporal is reached.
    async with activities_from(settings) as activities:
        problem = await work(settings, activities, workflow_runner, versioned, tracing)
    log.info("Worker stopped")
    if problem is not None:
        raise SystemExit(f"run_worker: {problem}")


async def work(
    settings: WorkerSettings,
    activities: BookingActivities,
    workflow_runner: WorkflowRunner | None,
    versioned: bool,
    tracing: bool = False,
) -> BaseException | None:
    """Poll until SIGINT or SIGTERM, or until the version has drained; then drain.

    Returns what looking after the version raised, if it did. `tracing`: with the plugin.
    """
    config = temporal_connect_config()
    try:
        sdk = runtime(settings.metrics_address)
        client = await Client.connect(**config, runtime=sdk, plugins=temporal_plugins(tracing))
    except RuntimeError as err:
        raise SystemExit(f"cannot reach Temporal at {config['target_host']}: {err}") from None
    try:
        await prepare(client)  # the search attributes every booking sets
    except NamespaceProblem as err:
        raise SystemExit(str(err)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    version = settings.version.version if versioned else None
    queue = settings.task_queue
    runner = workflow_runner
    async with build_worker(client, activities, queue, workflow_runner=runner, version=version):
        log.info(
            "Worker polling task queue %r %s; Ctrl-C to stop",
            queue,
            f"as version {key(version)}" if version else "unversioned",
        )
        watching = look_after_version(client, settings, sdk.metric_meter, stop) if version else None
        problem = await until_stopped(stop, watching)
        log.info("Draining activities in flight (up to %s)", GRACEFUL_SHUTDOWN)
    return problem


async def until_stopped(
    stop: asyncio.Event, watching: Coroutine[Any, Any, None] | None
) -> BaseException | None:
    """Wait for `stop`, or for `watching` to end; return what `watching` raised, if it did."""
    if watching is None:
        await stop.wait()
        return None
    watch = asyncio.create_task(watching)
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait((watch, signalled), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if not watch.done():
        watch.cancel()
        return None
    return watch.exception()


def exit_skipping_teardown(code: int | str | None) -> NoReturn:
    """Exit as `sys.exit(code)` would, spans and output sent, but skip the interpreter's teardown.

    The SDK's Rust threads may still run as the interpreter finalizes, which
    can crash a worker whose work is done (sdk-python #300; seen here as
    "Fatal Python error: PyGILState_Release" after "Worker stopped").
    """
    stop_tracing()
    if isinstance(code, str):
        print(code, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1 if isinstance(code, str) else code or 0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ConfigError, SystemExit) as err:
        exit_skipping_teardown(err.code if isinstance(err, SystemExit) else f"run_worker: {err}")
    exit_skipping_teardown(0)
