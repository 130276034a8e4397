"""Deploying a changed saga while bookings run (docs/operating.md, "Deploying a changed saga").

v1 is this checkout's saga, run by a worker in the test whose car rental
holds every booking until the test lets it answer. v2 books the hotel before
the car: a copy of the project with the two `Step` lines swapped, deployed
from the copy by `python -m tools.deploy`, the command behind `make deploy`.
The negative control deploys the same change the old way, by a plain
restart of an unversioned worker, and shows that the checks see it.
"""

import asyncio
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import MetricMeter

from api.settings import ApiSettings
from deployment.bookings import pinned_to
from deployment.versions import SetCurrent, VersionSettings, code_build_id, routing, take_current
from run_worker import WorkerSettings, build_worker, look_after_version
from shared import (
    BOOKING_STATUS,
    BookingState,
    BookVacationInput,
    Leg,
    Outcome,
    Resolution,
    UndoOutcome,
)
from simulated.store import ProviderStore
from tests.support.providers import rows_of
from tests.support.sagas import broken_copy, changed_copy
from tests.support.trips import BrokenHotelUndo, HeldCar, trip
from tests.support.workers import quick, quick_activities, reported, until
from tools.audit import run_audit
from tools.children import Child
from tools.processes import ROOT
from workflows import BookingWorkflow

V1_ORDER = ["book_car", "book_hotel", "book_flight"]
V2_ORDER = ["book_hotel", "book_car", "book_flight"]


@dataclass(frozen=True)
class Expected:
    """What one booking must have done: its outcome, its steps, and the version it ran on."""

    booking: BookVacationInput
    order: list[str]
    build_id: str

    @property
    def outcome(self) -> Outcome:
        valid = self.booking.book_hotel_id.startswith("valid")
        return Outcome.CONFIRMED if valid else Outcome.CANCELLED


def trips(count: int) -> list[BookVacationInput]:
    """Return `count` bookings, every fourth with a hotel that refuses (so it is undone)."""
    return [
        trip(hotel="invalid-hotel-id" if i % 4 == 3 else "valid-hotel-id", attempts=10)
        for i in range(count)
    ]


async def start(client: Client, task_queue: str, bookings: list[BookVacationInput]) -> None:
    await asyncio.gather(
        *(
            client.start_workflow(BookingWorkflow.run, b, id=b.book_user_id, task_queue=task_queue)
            for b in bookings
        )
    )


async def wait_for_output(child: Child, text: str, within: float = 60) -> None:
    """Wait for a line of the child's output without blocking the test's workers."""
    await asyncio.to_thread(child.output.wait_for, text, within)


OPERATING = (ROOT / "docs" / "operating.md").read_text()
DEPLOY_SAMPLE = re.search(r"```text\n(deploy \| .*?)```", OPERATING, re.DOTALL)
"""docs/operating.md's `make deploy` output."""
KEEPS = re.search(r"deploy \| \S+ keeps 1 booking\(s\) that wait for a person .*", OPERATING)
"""docs/operating.md's line of `make deploy` for an old version kept for a person's decision."""
DOCUMENTED_OLD, DOCUMENTED_NEW = "saga-booking:saga-7c2d9e4f5a6b", "saga-booking:saga-1f0e6a1c2b3d"


def assert_stages_as_documented(output: str, shown: dict[str, str]) -> None:
    """Check that the documented lines come in `output`, in order (names as `shown`, any counts)."""
    assert DEPLOY_SAMPLE is not None
    lines = iter(output.splitlines())
    for documented in DEPLOY_SAMPLE.group(1).splitlines():
        pattern = re.escape(documented)
        for mark, text in zip("ABC", shown, strict=True):  # marks without digits
            pattern = pattern.replace(re.escape(text), f"\x00{mark}\x00")
        pattern = re.sub(r"\d+", r"\\d+", pattern)
        for mark, actual in zip("ABC", shown.values(), strict=True):
            pattern = pattern.replace(f"\x00{mark}\x00", re.escape(actual))
        assert any(re.fullmatch(pattern, line) for line in lines), (documented, output)


async def deploy_problems(client: Client, expected: list[Expected], within: float) -> list[str]:
    """Return what is wrong with the bookings, once all have ended or `within` s have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    problems: list[str] = []
    for e in expected:
        user_id = e.booking.book_user_id
        handle = client.get_workflow_handle(user_id, result_type=BookingState)
        while (described := await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.2)
        if described.status != WorkflowExecutionStatus.COMPLETED:
            problems.append(f"{user_id}: {described.status.name if described.status else '?'}")
        elif (outcome := (await handle.result()).outcome) != e.outcome:
            problems.append(f"{user_id}: {outcome}, not {e.outcome}")
        booked: list[str] = []
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                cause = event.workflow_task_failed_event_attributes.failure.message
                problems.append(f"{user_id}: a workflow task failed ({cause[:60]})")
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name.startswith("book_"):
                booked.append(name)
        if booked != e.order[: len(booked)]:
            problems.append(f"{user_id}: ran {booked}, not {e.order}")
        versioning = described.raw_description.workflow_execution_info.versioning_info
        pinned = versioning.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_PINNED
        if not pinned or versioning.deployment_version.build_id != e.build_id:
            problems.append(f"{user_id}: not pinned to {e.build_id}")
    return problems


async def last_closed(client: Client, bookings: list[BookVacationInput]) -> datetime:
    """Return when the last of `bookings` ended."""
    closed = [
        (await client.get_workflow_handle(b.book_user_id).describe()).close_time for b in bookings
    ]
    assert None not in closed
    return max(c for c in closed if c is not None)


def process_env(
    address: str, task_queue: str, deployment_name: str, providers: Path
) -> dict[str, str]:
    """The environment of a worker or deploy started by a test: its server, queue and stores."""
    return {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "WORKER_DEPLOYMENT_NAME": deployment_name,
        "WORKER_METRICS_ADDRESS": "",
        "PROVIDERS_DIR": str(providers),
        "PROVIDERS_PORT": "0",  # each serves the providers over the same stores
        "SIM_LATENCY_SECONDS": "0",
    }


@pytest.mark.timeout(300)
async def test_changed_saga_deployed_as_v2_while_100_bookings_run_on_v1(
    client: Client, address: str, tmp_path: Path
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    v2_dir = changed_copy(tmp_path / "v2")
    providers = tmp_path / "providers"
    held = quick(HeldCar, providers)
    v1_settings = WorkerSettings(
        task_queue=task_queue, version=VersionSettings(name, code_build_id(), SetCurrent.IF_NONE)
    )
    v1, v2 = v1_settings.version.build_id, code_build_id(v2_dir)
    first, later = trips(100), trips(20)
    env = process_env(address, task_queue, name, providers)
    command = [sys.executable, "-m", "tools.deploy", "--canary-for", "5"]
    async with build_worker(client, held, task_queue, version=v1_settings.version.version):
        looking_after = asyncio.create_task(
            look_after_version(client, v1_settings, MetricMeter.noop, asyncio.Event())
        )

        async def v1_current() -> bool:
            known = await routing(client, name)
            return known is not None and known.current == v1

        await until(v1_current, "v1, the first version, current")
        await start(client, task_queue, first)
        await until(lambda: len(held.reached) == len(first), "all 100 held at the car rental")
        deploy = Child(command, cwd=v2_dir, env=env)
        try:
            await wait_for_output(deploy, "is current: new bookings start on it")
            await start(client, task_queue, later)
            held.opened.set()
            await wait_for_output(deploy, "has drained", within=120)
            await asyncio.wait_for(looking_after, 60)  # v1's worker retires: it stops
            retired_at = datetime.now(UTC)
            problems = await deploy_problems(
                client,
                [Expected(b, V1_ORDER, v1) for b in first]
                + [Expected(b, V2_ORDER, v2) for b in later],
                within=60,
            )
        finally:
            status = deploy.stop(60)
    output = deploy.output.text()
    assert problems == [], output
    assert await last_closed(client, first) < retired_at
    report = await run_audit(client, rows_of(ProviderStore.open_all(providers)), task_queue)
    assert report.clean, report.summary()
    assert report.outcomes == {"confirmed": 90, "cancelled": 30}, report.summary()
    assert status == 0, output
    assert f"open bookings: {name}:{v1} 100, {name}:{v2} 0" in output
    shown = {
        DOCUMENTED_OLD: f"{name}:{v1}",
        DOCUMENTED_NEW: f"{name}:{v2}",
        "saga-task-queue": task_queue,
    }
    assert_stages_as_documented(output, shown)


@pytest.mark.timeout(180)
async def test_the_same_change_by_a_plain_restart_fails_those_checks(
    client: Client, address: str, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    task_queue = f"restart-{uuid.uuid4()}"
    v2_dir = changed_copy(tmp_path / "v2")
    providers = tmp_path / "providers"
    held = quick(HeldCar, providers)
    first, later = trips(20), trips(5)
    async with build_worker(client, held, task_queue):  # unversioned, SIGTERMed below
        await start(client, task_queue, first)
        await until(lambda: len(held.reached) == len(first), "all 20 held at the car rental")
    env = process_env(address, task_queue, "unused", providers)
    restarted = Child([sys.executable, "-m", "tools.unversioned_worker"], cwd=v2_dir, env=env)
    try:
        await wait_for_output(restarted, "Worker polling")
        await start(client, task_queue, later)
        problems = await deploy_problems(
            client,
            [Expected(b, V1_ORDER, "v1") for b in first]
            + [Expected(b, V2_ORDER, "v2") for b in later],
            within=30,
        )
        found = await reported(client, "unused", task_queue)
        api = make_app(ApiSettings(task_queue=task_queue)).test_client()
        status = await asyncio.to_thread(api.get, f"/bookings/{first[0].book_user_id}")
    finally:
        restarted.stop(30)
    stuck = {p.split(":")[0] for p in problems if "a workflow task failed" in p}
    running = {p.split(":")[0] for p in problems if p.endswith(": RUNNING")}
    assert stuck == running == {b.book_user_id for b in first}, problems
    # And they are seen: reported as stuck, as /readyz and the worker's log say.
    assert [(group.reason, group.bookings.count) for group in found] == [
        ("bookings whose workflow task keeps failing", len(first))
    ]
    assert status.status_code == 503
    assert status.get_json()["detail"].startswith(
        "the booking cannot move: its workflow task keeps failing"
    )


async def current_build_id(client: Client, name: str) -> str | None:
    known = await routing(client, name)
    return known.current if known else None


async def current_build_id_is(client: Client, name: str, build_id: str) -> bool:
    return await current_build_id(client, name) == build_id


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("options", "switched"),
    [
        ([], "is current: new bookings start on it"),
        (["--ramp", "99", "--ramp-for", "20"], "ramping: 99 % of new bookings go to"),
    ],
    ids=["current", "ramping"],
)
async def test_a_version_that_fails_its_first_bookings_is_rolled_back(
    client: Client, address: str, tmp_path: Path, options: list[str], switched: str
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    broken = broken_copy(tmp_path / "broken")
    providers = tmp_path / "providers"
    v1 = VersionSettings(name, code_build_id())
    v1_settings = WorkerSettings(task_queue=task_queue, version=v1)
    env = process_env(address, task_queue, name, providers)
    command = [sys.executable, "-m", "tools.deploy", "--canary-for", "20", *options]
    async with build_worker(client, quick_activities(providers), task_queue, version=v1.version):
        # As run_worker.py runs it: it would stop once its version drained.
        looking_after = asyncio.create_task(
            look_after_version(client, v1_settings, MetricMeter.noop, asyncio.Event())
        )
        await until(lambda: current_build_id_is(client, name, v1.build_id), "v1 current")
        deploy = Child(command, cwd=broken, env=env)
        try:
            await wait_for_output(deploy, switched)
            canaries = trips(3)
            await start(client, task_queue, canaries)
            # Put back, it waits for the bookings it took: its drain, 30 s here.
            status = await asyncio.to_thread(deploy.process.wait, 120)
        finally:
            deploy.stop(30)
        output = deploy.output.text()
        assert status == 1, output
        failed = re.search(
            rf"failed: {name}:{code_build_id(broken)} fails the workflow task of (.+); "
            rf"new bookings go to {name}:{v1.build_id} again",
            output,
        )
        assert failed is not None, output
        assert set(failed.group(1).split(", ")) <= {b.book_user_id for b in canaries}
        known = await routing(client, name)
        assert known is not None
        assert (known.current, known.ramping) == (v1.build_id, None)
        # Never pinned (their first task failed), the bookings run on the version put back,
        # whose worker did not stop meanwhile, though it had no booking of its own.
        for booking in canaries:
            handle = client.get_workflow_handle(booking.book_user_id, result_type=BookingState)
            assert (await handle.result()).outcome == Outcome.CONFIRMED
        assert not looking_after.done()
        looking_after.cancel()


@pytest.mark.timeout(240)
async def test_a_booking_that_waits_for_a_person_keeps_its_version_until_it_is_decided(
    client: Client, address: str, tmp_path: Path
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    v2_dir = changed_copy(tmp_path / "v2")
    providers = tmp_path / "providers"
    activities = quick(BrokenHotelUndo, providers)
    activities.refuse = True  # the hotel refuses its undo: the booking waits at once
    v1 = VersionSettings(name, code_build_id())
    v1_settings = WorkerSettings(task_queue=task_queue, version=v1)
    env = process_env(address, task_queue, name, providers)
    command = [sys.executable, "-m", "tools.deploy", "--canary-for", "1"]
    waiting = trip(flight="invalid-flight-id")
    async with build_worker(client, activities, task_queue, version=v1.version):
        looking_after = asyncio.create_task(
            look_after_version(client, v1_settings, MetricMeter.noop, asyncio.Event())
        )
        await until(lambda: current_build_id_is(client, name, v1.build_id), "v1 current")
        await start(client, task_queue, [waiting])
        handle = client.get_workflow_handle(waiting.book_user_id, result_type=BookingState)
        await until(lambda: waits_for_a_person(client, waiting), "the booking waits")
        deploy = Child(command, cwd=v2_dir, env=env)
        try:
            await wait_for_output(deploy, "wait for a person", within=120)
            v1_stays = not looking_after.done()
            resolved = Resolution(Leg.HOTEL, "cancelled at the front desk", "ops")
            await handle.execute_update(BookingWorkflow.resolve, resolved)
            result = await handle.result()
            await asyncio.wait_for(looking_after, 90)  # then v1's worker retires
        finally:
            status = deploy.stop(60)
    output = deploy.output.text()
    assert v1_stays, output
    assert result.outcome is Outcome.CANCELLED
    hotel = result.undo_of(Leg.HOTEL)
    assert hotel is not None
    assert (hotel.outcome, hotel.decided_by) == (UndoOutcome.RESOLVED, "ops")
    versioning = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    assert versioning.deployment_version.build_id == v1.build_id  # decided on its own version
    assert KEEPS is not None
    documented = KEEPS.group(0).replace(DOCUMENTED_OLD, f"{name}:{v1.build_id}")
    assert documented.replace("jane-smith-138367", waiting.book_user_id) in output.splitlines()
    assert status == 0, output


async def waits_for_a_person(client: Client, booking: BookVacationInput) -> bool:
    described = await client.get_workflow_handle(booking.book_user_id).describe()
    return described.typed_search_attributes.get(BOOKING_STATUS) == Outcome.NEEDS_ATTENTION


@pytest.mark.timeout(180)
async def test_a_deploy_interrupted_in_its_watch_puts_back_the_old_version_and_drains(
    client: Client, address: str, tmp_path: Path
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    changed = changed_copy(tmp_path / "v2")
    providers = tmp_path / "providers"
    v1, v2 = VersionSettings(name, code_build_id()), code_build_id(changed)
    # The new version's bookings take a few seconds: still running at the Ctrl-C.
    env = {**process_env(address, task_queue, name, providers), "SIM_LATENCY_SECONDS": "1"}
    command = [sys.executable, "-m", "tools.deploy", "--canary-for", "120"]
    async with build_worker(client, quick_activities(providers), task_queue, version=v1.version):
        await take_current(client, v1, task_queue)
        deploy = Child(command, cwd=changed, env=env)
        try:
            await wait_for_output(deploy, "is current: new bookings start on it")
            taken = trips(2)
            await start(client, task_queue, taken)
            v2_version = VersionSettings(name, v2).version

            async def both_pinned() -> bool:
                return (await pinned_to(client, v2_version)).count == len(taken)

            await until(both_pinned, "the two bookings pinned to v2")
            deploy.process.send_signal(signal.SIGINT)  # Ctrl-C
            status = await asyncio.to_thread(deploy.process.wait, 120)
        finally:
            deploy.stop(30)
        output = deploy.output.text()
        assert status == 1, output
        assert f"failed: interrupted; new bookings go to {name}:{v1.build_id}" in output
        assert await current_build_id(client, name) == v1.build_id
        # They finished on v2's worker, before the deploy stopped it.
        problems = await deploy_problems(client, [Expected(b, V2_ORDER, v2) for b in taken], 0)
        assert problems == [], output


@pytest.mark.timeout(120)
async def test_a_version_that_never_polls_leaves_the_current_one(
    client: Client, address: str, tmp_path: Path
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    changed = changed_copy(tmp_path / "v2")
    v1 = VersionSettings(name, code_build_id())
    env = process_env(address, task_queue, name, tmp_path / "providers")
    command = [sys.executable, "-m", "tools.deploy", "--workers", "0", "--poll-within", "3"]
    async with build_worker(
        client, quick_activities(tmp_path / "providers"), task_queue, version=v1.version
    ):
        await take_current(client, v1, task_queue)
        deploy = Child(command, cwd=changed, env=env)
        status = await asyncio.to_thread(deploy.process.wait, 60)
        output = deploy.output.text()
        assert status == 1, output
        assert f"failed: Temporal saw no worker of {name}:{code_build_id(changed)} poll" in output
        assert await current_build_id(client, name) == v1.build_id


async def test_deploying_the_current_version_does_nothing(
    client: Client, address: str, tmp_path: Path
) -> None:
    name, task_queue = f"deploy-{uuid.uuid4().hex[:8]}", f"deploy-{uuid.uuid4()}"
    v1 = VersionSettings(name, code_build_id())
    env = process_env(address, task_queue, name, tmp_path / "providers")
    async with build_worker(
        client, quick_activities(tmp_path / "providers"), task_queue, version=v1.version
    ):
        await take_current(client, v1, task_queue)
        deploy = Child([sys.executable, "-m", "tools.deploy"], cwd=ROOT, env=env)
        status = await asyncio.to_thread(deploy.process.wait, 60)
    assert status == 0, deploy.output.text()
    assert f"{name}:{v1.build_id} is already current: nothing to deploy" in deploy.output.text()


def test_make_deploy_tells_its_options() -> None:
    helped = subprocess.run(
        ["make", "--no-print-directory", "deploy", "DEPLOY_ARGS=--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    for option in ("--workers", "--poll-within", "--ramp", "--ramp-for", "--canary-for"):
        assert option in helped.stdout
