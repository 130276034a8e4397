"""Golden histories replayed without a server: a change that breaks determinism fails here."""

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from activities import BookingActivities
from shared import BookingState, BookVacationInput
from workflows import BookingWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


CHANGED_WITHOUT_A_VERSION = (
    "BookingWorkflow no longer replays the golden history {name!r}: {failure}. The bookings "
    "running on the deployed version would fail the same way. Deploy this change as a new "
    "version (`make deploy`: each booking stays on the version it started on; "
    'docs/operating.md, "Deploying a changed saga"), and only then re-record the '
    "histories, with `make histories`."
)
"""What a failed replay says: the way out, and when re-recording is right."""


def golden(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"golden-{path.stem}", path.read_text())


async def replay_problem(saga: type, path: Path) -> str | None:
    """Replay a golden history on `saga`; return what a failure means, None if it replays."""
    replayer = Replayer(workflows=[saga])
    replayed = await replayer.replay_workflow(golden(path), raise_on_replay_failure=False)
    failure = replayed.replay_failure
    if failure is None:
        return None
    return CHANGED_WITHOUT_A_VERSION.format(name=path.stem, failure=failure)


def test_there_is_a_history_for_each_ending() -> None:
    assert [path.stem for path in HISTORIES] == [
        "cancelled",
        "compensated",
        "confirmed",
        "deadline",
        "repaired",
        "resolved",
    ]


@pytest.mark.parametrize("path", HISTORIES, ids=lambda path: path.stem)
async def test_booking_workflow_replays_its_golden_history(path: Path) -> None:
    problem = await replay_problem(BookingWorkflow, path)
    assert problem is None, problem


@workflow.defn(name="BookingWorkflow", sandboxed=False)  # a test double: no sandbox
class HotelFirst:
    """BookingWorkflow as a careless change might leave it: hotel before car.

    Its deadline timer starts first, as the saga's does, so that the replay
    fails at the step, not at the timer.
    """

    @workflow.run
    async def run(self, book_input: BookVacationInput) -> BookingState:
        asyncio.create_task(workflow.sleep(book_input.deadline_seconds))  # noqa: RUF006
        hotel = workflow.execute_activity_method(
            BookingActivities.book_hotel,
            book_input,
            start_to_close_timeout=timedelta(seconds=10),
        )
        await asyncio.create_task(hotel)
        raise AssertionError("unreachable: the replay fails at the first step")


@pytest.mark.parametrize("path", HISTORIES, ids=lambda path: path.stem)
async def test_a_reordered_saga_fails_replay_at_its_first_step(path: Path) -> None:
    with pytest.raises(NondeterminismError, match=r"book_car.*book_hotel|book_hotel.*book_car"):
        await Replayer(workflows=[HotelFirst]).replay_workflow(golden(path))


@pytest.mark.parametrize("path", HISTORIES[:1], ids=lambda path: path.stem)
async def test_a_failed_replay_names_the_way_out(path: Path) -> None:
    problem = await replay_problem(HotelFirst, path)
    assert problem is not None
    assert "Deploy this change as a new version (`make deploy`" in problem
    assert "only then re-record the histories, with `make histories`" in problem
