"""The saga stopped from outside or by its deadline, against a real Temporal server:
every leg attempted is undone, once its step has answered."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import Worker

from activities import BookingActivities
from run_worker import build_worker
from shared import (
    BookVacationInput,
    Compensation,
    Leg,
    Outcome,
    UndoOutcome,
    UndoReport,
)
from tests.support.histories import (
    ActivityRun,
    activity_runs,
    cancel_seen,
    eventually,
    step_cancel_requested,
    timers,
)
from tests.support.providers import stores_of
from tests.support.trips import Gate, GatedFlight, trip
from tests.support.workers import (
    held_at_gate,
    quick,
    quick_activities,
    run_booking,
)
from workflows import BookingWorkflow

RELEASED = UndoOutcome.RELEASED
NOTHING = UndoOutcome.NOTHING_TO_UNDO


def ran(name: str, attempt: int = 1, outcome: str = "completed") -> ActivityRun:
    return ActivityRun(name, attempt, outcome)


async def request_cancel(handle: WorkflowHandle[Any, Any]) -> None:
    await handle.cancel()
    await eventually(lambda: cancel_seen(handle))


async def await_the_deadline(handle: WorkflowHandle[Any, Any]) -> None:
    await eventually(lambda: step_cancel_requested(handle))


async def request_cancel_then_await_the_deadline(handle: WorkflowHandle[Any, Any]) -> None:
    await request_cancel(handle)
    await eventually(lambda: has_events(handle, "timer_fired"))


# What stops the booking while the airline holds its answer → the booking's
# deadline, the reason given, and how its deadline timer ended. 5 s: time to
# reach the flight, and well before the step's own 10 s timeout would end it.
STOPPED_IN_FLIGHT = [
    pytest.param(request_cancel, 300, "cancelled by request", "canceled", id="cancel_request"),
    pytest.param(
        await_the_deadline, 5, "not booked within its deadline of 5 s", "fired", id="deadline"
    ),
    pytest.param(
        request_cancel_then_await_the_deadline,
        5,
        "cancelled by request",  # what stopped it first
        "fired",
        id="cancel_request_then_the_deadline",
    ),
]


@pytest.mark.parametrize(("stop", "deadline", "reason", "timer"), STOPPED_IN_FLIGHT)
async def test_a_booking_stopped_mid_flight_undoes_flight_hotel_car_once_the_airline_answers(
    client: Client,
    tmp_path: Path,
    stop: Callable[[WorkflowHandle[Any, Any]], Awaitable[None]],
    deadline: int,
    reason: str,
    timer: str,
) -> None:
    activities = quick(GatedFlight, tmp_path, hotel_outage=False)
    booking = trip(deadline_seconds=deadline)
    async with held_at_gate(client, activities, activities.gate, booking) as handle:
        await stop(handle)  # the flight is asked to stop; the airline answers after that
        activities.gate.opened.set()
        state = await handle.result()

    assert state.outcome is Outcome.CANCELLED
    assert state.reason == reason
    assert state.failed_leg is Leg.FLIGHT
    assert state.compensations == [
        Compensation(Leg.FLIGHT, RELEASED),
        Compensation(Leg.HOTEL, RELEASED),
        Compensation(Leg.CAR, RELEASED),
    ]
    assert all(not p.held() for p in stores_of(activities.providers).values())
    # A workflow timer, not the execution timeout: the run completes, with its undos.
    assert await timers(handle) == [(f"Deadline: booked within {deadline} s, or undone", timer)]
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED


class GatedHotelUndo(BookingActivities):
    """The hotel's undo answers only when the test opens its gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = Gate()

    @activity.defn(name="undo_book_hotel")
    async def undo_book_hotel(self, book_input: BookVacationInput) -> UndoReport:
        await self.gate.hold()
        return await super().undo_book_hotel(book_input)


async def test_cancel_request_while_undoing_still_runs_every_undo(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(GatedHotelUndo, tmp_path)
    booking = trip(flight="invalid-flight-id")
    async with held_at_gate(client, activities, activities.gate, booking) as handle:
        await handle.cancel()
        await eventually(lambda: cancel_seen(handle))
        activities.gate.opened.set()
        state = await handle.result()

    assert state.outcome is Outcome.CANCELLED
    assert state.reason == "Invalid flight booking: 'invalid-flight-id'"
    assert state.compensations == [
        Compensation(Leg.FLIGHT, NOTHING),
        Compensation(Leg.HOTEL, RELEASED),
        Compensation(Leg.CAR, RELEASED),
    ]
    assert all(not p.held() for p in stores_of(activities.providers).values())


async def test_a_booking_done_before_its_deadline_is_unaffected(
    client: Client, tmp_path: Path
) -> None:
    activities = quick_activities(tmp_path)
    handle, state = await run_booking(client, activities, trip(deadline_seconds=60))

    assert state.outcome is Outcome.CONFIRMED
    assert state.reason is None
    assert state.compensations == []
    assert [len(p.held()) for p in stores_of(activities.providers).values()] == [1, 1, 1]
    assert await timers(handle) == [("Deadline: booked within 60 s, or undone", "canceled")]


async def test_a_deadline_past_before_any_worker_took_the_booking_books_nothing(
    client: Client, tmp_path: Path
) -> None:
    booking = trip(deadline_seconds=1)
    task_queue = f"test-{uuid.uuid4()}"
    handle = await client.start_workflow(
        BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
    )
    started = (await handle.describe()).start_time

    async def deadline_gone_by() -> bool:
        return datetime.now(UTC) - started > timedelta(seconds=1)

    await eventually(deadline_gone_by)  # counted from the start, not from a worker
    activities = quick_activities(tmp_path)
    async with build_worker(client, activities, task_queue):
        state = await handle.result()

    assert state.outcome is Outcome.CANCELLED
    assert state.reason == "not booked within its deadline of 1 s"
    assert state.failed_leg is Leg.CAR
    assert state.compensations == []
    assert await activity_runs(handle) == []
    assert await timers(handle) == []


# The airline's answer → how the booking ends, why, and what was undone.
ANSWERS_WITH_THE_DEADLINE = [
    pytest.param("valid-flight-id", Outcome.CONFIRMED, None, [], id="booked"),
    pytest.param(
        "invalid-flight-id",
        Outcome.CANCELLED,
        "Invalid flight booking: 'invalid-flight-id'",
        [
            Compensation(Leg.FLIGHT, NOTHING),
            Compensation(Leg.HOTEL, RELEASED),
            Compensation(Leg.CAR, RELEASED),
        ],
        id="rejected",
    ),
]


@pytest.mark.parametrize(("flight", "outcome", "reason", "undos"), ANSWERS_WITH_THE_DEADLINE)
async def test_a_step_that_answers_with_the_deadline_counts_as_in_time(
    client: Client,
    tmp_path: Path,
    flight: str,
    outcome: Outcome,
    reason: str | None,
    undos: list[Compensation],
) -> None:
    # The workflow's worker is away while the airline answers and the deadline
    # passes: its next task brings both, and the answer, which came first, wins.
    activities = quick(GatedFlight, tmp_path, hotel_outage=False)
    booking = trip(flight=flight, deadline_seconds=8)
    task_queue = f"test-{uuid.uuid4()}"
    saga = partial(Worker, client, task_queue=task_queue, workflows=[BookingWorkflow])
    async with Worker(client, task_queue=task_queue, activities=activities.all()):
        async with saga():
            handle = await client.start_workflow(
                BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
            )
            await asyncio.wait_for(activities.gate.reached.wait(), 30)
        activities.gate.opened.set()
        await eventually(lambda: has_events(handle, "activity_task_completed", "timer_fired"))
        async with saga():
            state = await handle.result()

    assert (state.outcome, state.reason, state.compensations) == (outcome, reason, undos)
    held = [len(p.held()) for p in stores_of(activities.providers).values()]
    assert held == ([1, 1, 1] if outcome is Outcome.CONFIRMED else [0, 0, 0])
    assert await timers(handle) == [("Deadline: booked within 8 s, or undone", "fired")]


async def has_events(handle: WorkflowHandle[Any, Any], *kinds: str) -> bool:
    """Return whether the history holds an event of each kind (`timer_fired`, say)."""
    seen = {event.WhichOneof("attributes") async for event in handle.fetch_history_events()}
    return all(f"{kind}_event_attributes" in seen for kind in kinds)
