"""An undo that keeps failing: the saga waits for a person, who retries or resolves it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from activities import BookingActivities
from shared import (
    BOOKING_STATUS,
    MAX_NOTE_LENGTH,
    BookingState,
    Compensation,
    Leg,
    Outcome,
    Resolution,
    RetryUndo,
    UndoOutcome,
)
from tests.support.histories import ActivityRun, activity_runs, cancel_seen, eventually, timers
from tests.support.providers import stores_of
from tests.support.trips import BROKEN, BrokenHotelUndo, GatedFlight, trip
from tests.support.workers import quick, running_worker
from workflows import BookingWorkflow

NEEDS = UndoOutcome.NEEDS_ATTENTION


Handle = WorkflowHandle[BookingWorkflow, BookingState]


@asynccontextmanager
async def waiting_booking(
    client: Client, activities: BookingActivities, **changes: Any
) -> AsyncIterator[Handle]:
    """Start a booking whose flight is refused; yield it once it waits for a person."""
    booking = replace(trip(flight="invalid-flight-id", undo_attempts=2), **changes)
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await eventually(lambda: waits(handle))
        yield handle


async def waits(handle: Handle) -> bool:
    return (await handle.query(BookingWorkflow.progress)).outcome is Outcome.NEEDS_ATTENTION


def held(activities: BookingActivities) -> dict[Leg, int]:
    return {leg: len(store.held()) for leg, store in stores_of(activities.providers).items()}


async def updates_in_history(handle: Handle) -> int:
    return len(
        [
            event
            async for event in handle.fetch_history_events()
            if event.HasField("workflow_execution_update_accepted_event_attributes")
        ]
    )


async def test_undo_that_keeps_failing_waits_for_a_person_after_the_other_undos(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities) as handle:
        state = await handle.query(BookingWorkflow.progress)
        described = await handle.describe()

    assert [(c.leg, c.outcome, c.error) for c in state.compensations] == [
        (Leg.FLIGHT, UndoOutcome.NOTHING_TO_UNDO, None),
        (Leg.HOTEL, NEEDS, f"{BROKEN} (no attempts left)"),
        (Leg.CAR, UndoOutcome.RELEASED, None),
    ]
    assert state.awaiting[0].since is not None
    assert described.typed_search_attributes.get(BOOKING_STATUS) == "needs attention"
    assert held(activities) == {Leg.CAR: 0, Leg.HOTEL: 1, Leg.FLIGHT: 0}


async def test_a_retry_while_broken_still_waits_and_one_after_the_mend_completes_it(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities) as handle:
        still = await handle.execute_update(BookingWorkflow.retry_undo, RetryUndo(Leg.HOTEL, "ops"))
        waiting = await waits(handle)
        activities.mended = True
        mended = await handle.execute_update(
            BookingWorkflow.retry_undo, RetryUndo(Leg.HOTEL, "ops")
        )
        result = await handle.result()

    assert (still.outcome, still.retries, still.decided_by) == (NEEDS, 1, None)
    assert waiting
    assert (mended.outcome, mended.retries, mended.decided_by) == (UndoOutcome.RELEASED, 2, "ops")
    assert result.outcome is Outcome.CANCELLED
    assert result.compensations[1] == mended
    assert held(activities) == {Leg.CAR: 0, Leg.HOTEL: 0, Leg.FLIGHT: 0}


async def test_resolve_completes_the_booking_with_the_note_and_who_decided(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities) as handle:
        resolved = await handle.execute_update(
            BookingWorkflow.resolve, Resolution(Leg.HOTEL, "cancelled by phone", "alice")
        )
        result = await handle.result()

    assert result.outcome is Outcome.CANCELLED
    assert result.compensations[1] == resolved
    assert (resolved.outcome, resolved.decided_by, resolved.note) == (
        UndoOutcome.RESOLVED,
        "alice",
        "cancelled by phone",
    )
    assert resolved.error == f"{BROKEN} (no attempts left)"


async def test_a_refused_undo_needs_attention_at_once_without_the_backoff(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    activities.refuse = True
    async with waiting_booking(client, activities, undo_attempts=10) as handle:
        runs = await activity_runs(handle)
        state = await handle.query(BookingWorkflow.progress)

    assert ActivityRun("undo_book_hotel", 1, "failed") in runs
    assert state.undo_of(Leg.HOTEL) == replace(
        state.awaiting[0], leg=Leg.HOTEL, outcome=NEEDS, error="no such booking here"
    )


@pytest.mark.parametrize(
    ("update", "decision"),
    [
        ("retry_undo", RetryUndo(Leg.HOTEL, "alice")),
        ("resolve", Resolution(Leg.HOTEL, "by phone", "alice")),
    ],
)
async def test_a_repeated_decision_answers_what_it_did_the_first_time(
    client: Client, tmp_path: Path, update: str, decision: RetryUndo | Resolution
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    activities.car_broken = True  # so that the booking still waits after the hotel's decision
    async with waiting_booking(client, activities) as handle:
        activities.mended = update == "retry_undo"
        first = await handle.execute_update(update, decision, result_type=Compensation)
        again = await handle.execute_update(
            update, replace(decision, by="bob"), result_type=Compensation
        )
        await handle.execute_update(BookingWorkflow.resolve, Resolution(Leg.CAR, "by phone", "a"))
        result = await handle.result()

    assert first.decided_by == "alice"
    assert again == first == result.compensations[1]


async def test_a_repeated_resolve_answers_the_first_even_with_a_note_it_would_refuse(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    activities.car_broken = True  # so that the booking still waits after the hotel's decision
    async with waiting_booking(client, activities) as handle:
        first = await handle.execute_update(
            BookingWorkflow.resolve, Resolution(Leg.HOTEL, "by phone", "alice")
        )
        again = await handle.execute_update(
            BookingWorkflow.resolve, Resolution(Leg.HOTEL, " ", "bob")
        )
        await handle.execute_update(BookingWorkflow.resolve, Resolution(Leg.CAR, "by phone", "a"))

    assert again == first


async def test_the_reminder_repeats_on_a_workflow_timer_while_it_waits(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities, reminder_seconds=1) as handle:
        await eventually(lambda: reminders_fired(handle, at_least=2))
        await handle.execute_update(BookingWorkflow.resolve, Resolution(Leg.HOTEL, "done", "a"))
        await handle.result()

    reminders = [ended for summary, ended in await timers(handle) if summary.startswith("Reminder")]
    assert reminders.count("fired") >= 2
    assert "pending" not in reminders  # the decision ended the last one


async def reminders_fired(handle: Handle, at_least: int) -> bool:
    fired = [
        t for t in await timers(handle) if t == ("Reminder: waits for a person (hotel)", "fired")
    ]
    return len(fired) >= at_least


async def test_a_cancel_request_while_it_waits_leaves_it_waiting(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities) as handle:
        await handle.cancel()
        await eventually(lambda: cancel_seen(handle))
        waiting = await waits(handle)
        await handle.execute_update(BookingWorkflow.resolve, Resolution(Leg.HOTEL, "done", "a"))
        result = await handle.result()

    assert waiting
    assert result.outcome is Outcome.CANCELLED


REFUSALS = [
    pytest.param(
        "retry_undo",
        {"leg": "car", "by": "ops"},
        "the car does not need attention",
        id="leg_released",
    ),
    pytest.param(
        "retry_undo",
        {"leg": "flight", "by": "ops"},
        "the flight does not need attention",
        id="leg_nothing_to_undo",
    ),
    pytest.param(
        "retry_undo", {"leg": "boat", "by": "ops"}, "Failed decoding arguments", id="unknown_leg"
    ),
    pytest.param("retry_undo", {"leg": "hotel", "by": " "}, "say who decides", id="nobody"),
    pytest.param(
        "resolve", {"leg": "hotel", "note": " ", "by": "ops"}, "the note must", id="blank_note"
    ),
    pytest.param(
        "resolve",
        {"leg": "hotel", "note": "x" * (MAX_NOTE_LENGTH + 1), "by": "ops"},
        "the note must",
        id="oversize_note",
    ),
    pytest.param(
        "resolve",
        {"leg": "car", "note": "n", "by": "ops"},
        "does not need attention",
        id="resolve_released",
    ),
]


@pytest.mark.parametrize(("update", "given", "reason"), REFUSALS)
async def test_a_decision_that_cannot_be_taken_is_rejected_and_recorded_nowhere(
    client: Client, tmp_path: Path, update: str, given: dict[str, str], reason: str
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path)
    async with waiting_booking(client, activities) as handle:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(update, given)
        state = await handle.query(BookingWorkflow.progress)
        recorded = await updates_in_history(handle)

    assert reason in str(refused.value.cause)
    assert recorded == 0
    assert state.outcome is Outcome.NEEDS_ATTENTION
    assert [c.outcome for c in state.compensations][1] is NEEDS


async def test_a_decision_on_a_booking_that_does_not_wait_is_rejected(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(GatedFlight, tmp_path)
    booking = trip()
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await activities.gate.reached.wait()
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(BookingWorkflow.retry_undo, RetryUndo(Leg.CAR, "ops"))
        activities.gate.opened.set()
        result = await handle.result()

    assert "is not waiting for a decision: it is booking" in str(refused.value.cause)
    assert result.outcome is Outcome.CONFIRMED
    assert await updates_in_history(handle) == 0
