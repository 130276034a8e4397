"""The saga's worker deployment: versions from settings, the first deploy, and stuck bookings."""

import asyncio
import dataclasses
import os
import re
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from temporalio.client import Client

from api.settings import ApiSettings
from config import ConfigError
from deployment.bookings import Bookings
from deployment.stuck import Stuck, stuck
from deployment.versions import (
    SANDBOXED_CODE,
    SetCurrent,
    VersionSettings,
    code_build_id,
    routing,
    take_current,
)
from run_worker import WorkerSettings, build_worker, look_after_version, runtime
from shared import DEPLOYMENT_NAME, BookingState, BookVacationInput, Outcome
from tests.support.keys import API_KEYS
from tests.support.trips import HeldCar, trip
from tests.support.workers import quick, reported, until
from tests.test_observability import sample, scrape
from tools.processes import ROOT, free_port, temporal_binary
from workflows import BookingWorkflow

OPERATING = (ROOT / "docs" / "operating.md").read_text()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, VersionSettings(DEPLOYMENT_NAME, code_build_id(), SetCurrent.IF_NONE)),
        (
            {"WORKER_DEPLOYMENT_NAME": "trips", "WORKER_BUILD_ID": "v7"},
            VersionSettings("trips", "v7", SetCurrent.IF_NONE),
        ),
        ({"WORKER_SET_CURRENT": "always"}, VersionSettings(set_current=SetCurrent.ALWAYS)),
        ({"WORKER_SET_CURRENT": "never"}, VersionSettings(set_current=SetCurrent.NEVER)),
        ({"WORKER_BUILD_ID": ""}, VersionSettings()),
        ({"WORKER_DEPLOYMENT_NAME": ""}, VersionSettings()),
    ],
)
def test_version_settings_come_from_the_environment(
    env: dict[str, str], expected: VersionSettings
) -> None:
    assert VersionSettings.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_DEPLOYMENT_NAME": "a:b"}, "WORKER_DEPLOYMENT_NAME must be a name"),
        ({"WORKER_BUILD_ID": "1.2"}, "WORKER_BUILD_ID must be a name"),
        ({"WORKER_BUILD_ID": 'say "hi"'}, "WORKER_BUILD_ID must be a name"),
        ({"WORKER_SET_CURRENT": "yes"}, "WORKER_SET_CURRENT must be one of if-none, always"),
    ],
)
def test_bad_version_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VersionSettings.from_env(env)


def test_the_build_id_is_a_digest_of_the_sandboxed_code(tmp_path: Path) -> None:
    for name in SANDBOXED_CODE:
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    assert code_build_id(tmp_path) == code_build_id()
    assert code_build_id().startswith("saga-")
    (tmp_path / "workflows.py").write_text((ROOT / "workflows.py").read_text() + "\n# a change\n")
    assert code_build_id(tmp_path) != code_build_id()


def test_stuck_bookings_are_told_by_count_and_first_ids() -> None:
    few = Stuck("bookings pinned to version d:b1, which no worker takes", Bookings(2, ["a", "b"]))
    many = Stuck("bookings whose workflow task keeps failing", Bookings(12, ["a", "b"]))
    assert str(few) == "2 bookings pinned to version d:b1, which no worker takes: a, b"
    assert str(many) == "12 bookings whose workflow task keeps failing: a, b and 10 more"


@pytest.mark.parametrize(
    ("set_current", "current_after"),
    [(SetCurrent.IF_NONE, "b1"), (SetCurrent.ALWAYS, "b2"), (SetCurrent.NEVER, "b1")],
)
async def test_a_starting_worker_takes_its_version_current_as_told(
    client: Client, tmp_path: Path, set_current: SetCurrent, current_after: str
) -> None:
    name, task_queue = f"dep-{uuid.uuid4().hex[:8]}", f"dep-{uuid.uuid4()}"
    first, second = VersionSettings(name, "b1"), VersionSettings(name, "b2", set_current)
    activities = quick(HeldCar, tmp_path)
    async with build_worker(client, activities, task_queue, version=first.version):
        said = await take_current(client, first, task_queue)
        assert said == f"Version {name}:b1 is now current (was none)"
        async with build_worker(client, activities, task_queue, version=second.version):
            said = await take_current(client, second, task_queue)
    known = await routing(client, name)
    assert known is not None
    assert known.current == current_after
    assert said.startswith(
        f"Version {name}:b2 is now current (was b1)"
        if current_after == "b2"
        else f"Version {name}:b2 waits to be made current"
    )


MOVE = re.search(r"```bash\n(\S*temporal workflow update-options .*?)```", OPERATING, re.DOTALL)
"""docs/operating.md's way to move stuck bookings to another version."""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("recovery", ["old workers started again", "moved to the new version"])
async def test_bookings_left_on_a_version_without_workers_are_reported_then_recovered(
    client: Client,
    address: str,
    tmp_path: Path,
    make_app: Callable[..., Flask],
    recovery: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`make run` restarted after an edit: the new version current, the old one's bookings stuck."""
    name, task_queue = f"dep-{uuid.uuid4().hex[:8]}", f"dep-{uuid.uuid4()}"
    old = VersionSettings(name, "before-the-edit")
    new = WorkerSettings(
        task_queue=task_queue, version=VersionSettings(name, "after-the-edit", SetCurrent.ALWAYS)
    )
    held = quick(HeldCar, tmp_path)
    bookings = [trip() for _ in range(3)]
    ids = {b.book_user_id for b in bookings}
    async with build_worker(client, held, task_queue, version=old.version):
        await take_current(client, old, task_queue)
        for booking in bookings:
            await client.start_workflow(
                BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
            )
        await until(lambda: len(held.reached) == len(bookings), "all held at the car rental")
    port = free_port()
    metrics = runtime(f"127.0.0.1:{port}")  # kept: its endpoint lives as long as it does
    stop = asyncio.Event()
    async with build_worker(client, held, task_queue, version=new.version.version):
        watching = asyncio.create_task(look_after_version(client, new, metrics.metric_meter, stop))
        found = await reported(client, name, task_queue)
        assert [(group.reason, set(group.bookings.user_ids)) for group in found] == [
            (f"bookings pinned to version {name}:before-the-edit, which no worker takes", ids)
        ]
        settings = ApiSettings(task_queue=task_queue, deployment_name=name)
        api = make_app(settings).test_client()
        ready = await asyncio.to_thread(api.get, "/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["stuck"] == len(ids)
        assert ready.get_json()["detail"].startswith(
            f"3 bookings pinned to version {name}:before-the-edit, which no worker takes: "
        )
        assert all(user_id in ready.get_json()["detail"] for user_id in ids)  # open: all see all
        keyed = make_app(dataclasses.replace(settings, api_keys=API_KEYS)).test_client()
        public = await asyncio.to_thread(keyed.get, "/readyz")  # with keys: no one's booking
        assert (public.status_code, public.get_json()["stuck"]) == (503, len(ids))
        assert not [user_id for user_id in ids if user_id in public.get_data(as_text=True)]

        status = await asyncio.to_thread(api.get, f"/bookings/{bookings[0].book_user_id}")
        assert status.status_code == 503
        assert status.get_json()["detail"] == (
            f"the booking cannot move: it is pinned to version {name}:before-the-edit, "
            "and no worker of that version takes it"
        )
        url = f"http://127.0.0.1:{port}/metrics"

        async def counted() -> bool:
            return sample(await asyncio.to_thread(scrape, url), "saga_bookings_stuck") == len(ids)

        await until(counted, "the stuck bookings counted by the worker's metric", within=30)
        # The worker's log names them, as it counts them (the API's /readyz is public).
        logged = [r.getMessage() for r in caplog.records if r.name == "run_worker"]
        assert any(line.startswith("Stuck: 3 bookings pinned") for line in logged), logged
        assert all(user_id in "".join(logged) for user_id in ids)
        held.opened.set()
        if recovery == "moved to the new version":  # which can replay them: the same code
            assert MOVE is not None
            command = (
                MOVE.group(1)
                .replace("saga-booking:saga-0123456789ab", f"{name}:before-the-edit")
                .replace("saga-booking", name)
                .replace("saga-ba9876543210", "after-the-edit")
                .replace(".venv/bin/temporal", temporal_binary())
            )
            moved = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-c", command],
                env={**os.environ, "TEMPORAL_ADDRESS": address},
                capture_output=True,
                text=True,
            )
            assert moved.returncode == 0, moved.stderr
            await finished(client, bookings)
        else:  # as run_worker.py does: serves them, then stops once its version drained
            again = WorkerSettings(task_queue=task_queue, version=old)
            # A process of its own has an identity of its own: Temporal tells pollers by it.
            own = await Client.connect(address, identity=f"recovery-{uuid.uuid4()}")
            async with build_worker(own, held, task_queue, version=old.version):
                retiring = asyncio.create_task(
                    look_after_version(own, again, metrics.metric_meter, asyncio.Event())
                )
                await finished(client, bookings)
                await asyncio.wait_for(retiring, 90)

        async def none_stuck() -> bool:
            return await stuck(client, name, task_queue) == []

        await until(none_stuck, "no booking stuck")
        stop.set()
        await watching


async def finished(client: Client, bookings: list[BookVacationInput]) -> None:
    """Return once every booking has been confirmed."""
    async with asyncio.timeout(60):
        for booking in bookings:
            handle = client.get_workflow_handle(booking.book_user_id, result_type=BookingState)
            assert (await handle.result()).outcome == Outcome.CONFIRMED
