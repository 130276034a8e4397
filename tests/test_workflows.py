"""The saga, against a real Temporal server: what runs, in which order, what is held."""

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from shared import (
    BOOKING_CUSTOMER,
    BOOKING_STATUS,
    BookingState,
    Compensation,
    Leg,
    LegStatus,
    Outcome,
    UndoOutcome,
    search_attributes_at_start,
)
from tests.support.histories import (
    ActivityRun,
    activity_runs,
    booking_statuses,
    why_not_retried,
)
from tests.support.providers import stores_of
from tests.support.trips import GatedFlight, trip
from tests.support.workers import (
    held_at_gate,
    quick,
    quick_activities,
    run_booking,
    running_worker,
)
from workflows import BookingWorkflow

RELEASED = UndoOutcome.RELEASED
NOTHING = UndoOutcome.NOTHING_TO_UNDO


def ran(name: str, attempt: int = 1, outcome: str = "completed") -> ActivityRun:
    return ActivityRun(name, attempt, outcome)


# Which step is rejected → outcome, the activities in history order, the undos.
# The hotel is down on its first attempt, so it always shows attempt 2.
REJECTION_TABLE = [
    pytest.param(
        {},
        Outcome.CONFIRMED,
        [ran("book_car"), ran("book_hotel", 2), ran("book_flight")],
        [],
        id="all_valid_books_car_hotel_flight",
    ),
    pytest.param(
        {"car": "invalid-car-id"},
        Outcome.CANCELLED,
        [ran("book_car", 1, "failed"), ran("undo_book_car")],
        [Compensation(Leg.CAR, NOTHING)],
        id="invalid_car_undoes_car",
    ),
    pytest.param(
        {"hotel": "invalid-hotel-id"},
        Outcome.CANCELLED,
        [
            ran("book_car"),
            ran("book_hotel", 2, "failed"),
            ran("undo_book_hotel"),
            ran("undo_book_car"),
        ],
        [Compensation(Leg.HOTEL, NOTHING), Compensation(Leg.CAR, RELEASED)],
        id="invalid_hotel_undoes_hotel_then_car",
    ),
    pytest.param(
        {"flight": "invalid-flight-id"},
        Outcome.CANCELLED,
        [
            ran("book_car"),
            ran("book_hotel", 2),
            ran("book_flight", 1, "failed"),
            ran("undo_book_flight"),
            ran("undo_book_hotel"),
            ran("undo_book_car"),
        ],
        [
            Compensation(Leg.FLIGHT, NOTHING),
            Compensation(Leg.HOTEL, RELEASED),
            Compensation(Leg.CAR, RELEASED),
        ],
        id="invalid_flight_undoes_flight_hotel_car",
    ),
]


@pytest.mark.parametrize(("items", "outcome", "history", "compensations"), REJECTION_TABLE)
async def test_rejected_step_undoes_every_step_attempted_in_reverse(
    client: Client,
    tmp_path: Path,
    items: dict[str, Any],
    outcome: Outcome,
    history: list[ActivityRun],
    compensations: list[Compensation],
) -> None:
    activities = quick_activities(tmp_path)
    handle, state = await run_booking(client, activities, trip(**items))

    assert state.outcome is outcome
    assert await activity_runs(handle) == history
    # Replaying the history must reproduce it: the workflow code is deterministic.
    await Replayer(workflows=[BookingWorkflow]).replay_workflow(await handle.fetch_history())
    assert state.compensations == compensations
    held = {leg: len(p.held()) for leg, p in stores_of(activities.providers).items()}
    expected_held = 1 if outcome is Outcome.CONFIRMED else 0
    assert held == dict.fromkeys(Leg, expected_held)


async def test_rejection_is_not_retried_and_names_the_failed_step_and_reason(
    client: Client, tmp_path: Path
) -> None:
    handle, state = await run_booking(
        client, quick_activities(tmp_path), trip(hotel="invalid-hotel-id")
    )

    assert await why_not_retried(handle) == {"book_hotel": "RETRY_STATE_NON_RETRYABLE_FAILURE"}

    assert state.failed_leg is Leg.HOTEL
    assert state.reason == "Invalid hotel booking: 'invalid-hotel-id'"
    assert [(leg.leg, leg.status) for leg in state.legs] == [
        (Leg.CAR, LegStatus.BOOKED),
        (Leg.HOTEL, LegStatus.FAILED),
        (Leg.FLIGHT, LegStatus.PENDING),
    ]


async def test_one_attempt_gives_up_on_the_hotel_outage_and_undoes_the_car(
    client: Client, tmp_path: Path
) -> None:
    activities = quick_activities(tmp_path)
    handle, state = await run_booking(client, activities, trip(attempts=1))

    assert state.outcome is Outcome.CANCELLED
    assert state.reason == "Hotel service is down (no attempts left)"
    assert await why_not_retried(handle) == {"book_hotel": "RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED"}
    assert await activity_runs(handle) == [
        ran("book_car"),
        ran("book_hotel", 1, "failed"),
        ran("undo_book_hotel"),
        ran("undo_book_car"),
    ]
    assert state.compensations == [
        Compensation(Leg.HOTEL, NOTHING),
        Compensation(Leg.CAR, RELEASED),
    ]
    assert all(not p.held() for p in stores_of(activities.providers).values())


async def test_progress_query_shows_each_leg_while_the_saga_runs(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(GatedFlight, tmp_path)
    async with held_at_gate(client, activities, activities.gate, trip()) as handle:
        during = await handle.query(BookingWorkflow.progress)
        activities.gate.opened.set()
        done = await handle.result()

    assert during.outcome is Outcome.BOOKING
    assert [(leg.leg, leg.status) for leg in during.legs] == [
        (Leg.CAR, LegStatus.BOOKED),
        (Leg.HOTEL, LegStatus.BOOKED),
        (Leg.FLIGHT, LegStatus.PENDING),
    ]
    assert (
        during.legs[0].reservation_id
        == stores_of(activities.providers)[Leg.CAR].held().popitem()[1].reservation_id
    )
    assert done.outcome is Outcome.CONFIRMED
    assert isinstance(done, BookingState)
    assert [leg.status for leg in done.legs] == [LegStatus.BOOKED] * 3


async def test_parallel_undo_starts_every_undo_before_any_ends(
    client: Client, tmp_path: Path
) -> None:
    activities = quick_activities(tmp_path)
    booking = trip(flight="invalid-flight-id", parallel_undo=True)
    handle, state = await run_booking(client, activities, booking)

    assert len(state.compensations) == 3
    assert set(state.compensations) == {
        Compensation(Leg.FLIGHT, NOTHING),
        Compensation(Leg.HOTEL, RELEASED),
        Compensation(Leg.CAR, RELEASED),
    }
    scheduled, first_done = [], None
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name.startswith("undo_"):
                scheduled.append(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes") and scheduled:
            first_done = first_done or event.event_id
    assert len(scheduled) == 3
    assert first_done is not None
    assert max(scheduled) < first_done
    assert all(not p.held() for p in stores_of(activities.providers).values())


async def test_a_completed_booking_is_final_and_a_late_cancel_changes_nothing(
    client: Client, tmp_path: Path
) -> None:
    activities = quick_activities(tmp_path)
    handle, state = await run_booking(client, activities, trip())

    await handle.cancel()  # accepted by the server, and a no-op on a closed workflow

    assert state.outcome is Outcome.CONFIRMED
    assert [run.name for run in await activity_runs(handle)] == [
        "book_car",
        "book_hotel",
        "book_flight",
    ]
    assert (await handle.result()).outcome is Outcome.CONFIRMED
    assert [len(p.held()) for p in stores_of(activities.providers).values()] == [1, 1, 1]


@pytest.mark.parametrize(
    "field", ["attempts", "undo_attempts", "deadline_seconds", "reminder_seconds"]
)
async def test_an_input_no_retry_policy_can_honour_fails_the_workflow_for_good(
    client: Client, tmp_path: Path, field: str
) -> None:
    changes: dict[str, Any] = {field: 0}
    with pytest.raises(WorkflowFailureError) as failed:
        await run_booking(client, quick_activities(tmp_path), replace(trip(), **changes))

    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.message == f"{field} must be at least 1"


@pytest.mark.parametrize(
    ("items", "statuses"),
    [
        pytest.param({}, ["booking", "confirmed"], id="booked"),
        pytest.param(
            {"hotel": "invalid-hotel-id"}, ["booking", "compensating", "cancelled"], id="undone"
        ),
    ],
)
async def test_booking_status_follows_the_saga_for_visibility(
    client: Client, tmp_path: Path, items: dict[str, Any], statuses: list[str]
) -> None:
    handle, _ = await run_booking(client, quick_activities(tmp_path), trip(**items))

    assert await booking_statuses(handle) == statuses
    described = await handle.describe()
    assert described.typed_search_attributes.get(BOOKING_STATUS) == statuses[-1]


async def test_a_start_that_says_booking_is_not_told_again(client: Client, tmp_path: Path) -> None:
    booking = trip()
    async with running_worker(client, quick_activities(tmp_path)) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run,
            booking,
            id=booking.book_user_id,
            task_queue=task_queue,
            search_attributes=search_attributes_at_start("Jane Smith"),
        )
        await handle.result()

    assert await booking_statuses(handle) == ["confirmed"]
    described = (await handle.describe()).typed_search_attributes
    assert described.get(BOOKING_CUSTOMER) == "Jane Smith"
