"""The saga, against a real Temporal server: what runs, in which order, what is held."""

import asyncio
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import BookingActivities
from helpers import (
    ActivityRun,
    activity_runs,
    quick_activities,
    run_booking,
    running_worker,
    trip,
    why_not_retried,
)
from shared import (
    BookingState,
    BookVacationInput,
    Compensation,
    Leg,
    LegStatus,
    Outcome,
    Reservation,
    UndoOutcome,
    UndoReport,
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
    items: dict[str, Any],
    outcome: Outcome,
    history: list[ActivityRun],
    compensations: list[Compensation],
) -> None:
    activities = quick_activities()
    handle, state = await run_booking(client, activities, trip(**items))

    assert state.outcome is outcome
    assert await activity_runs(handle) == history
    assert state.compensations == compensations
    held = {leg: len(p.held()) for leg, p in activities.providers.items()}
    expected_held = 1 if outcome is Outcome.CONFIRMED else 0
    assert held == dict.fromkeys(Leg, expected_held)


async def test_rejection_is_not_retried_and_names_the_failed_step_and_reason(
    client: Client,
) -> None:
    handle, state = await run_booking(client, quick_activities(), trip(hotel="invalid-hotel-id"))

    assert await why_not_retried(handle) == {"book_hotel": "RETRY_STATE_NON_RETRYABLE_FAILURE"}

    assert state.failed_leg is Leg.HOTEL
    assert state.reason == "Invalid hotel booking: 'invalid-hotel-id'"
    assert [(leg.leg, leg.status) for leg in state.legs] == [
        (Leg.CAR, LegStatus.BOOKED),
        (Leg.HOTEL, LegStatus.FAILED),
        (Leg.FLIGHT, LegStatus.PENDING),
    ]


async def test_one_attempt_gives_up_on_the_hotel_outage_and_undoes_the_car(
    client: Client,
) -> None:
    activities = quick_activities()
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
    assert all(not p.held() for p in activities.providers.values())


class StuckHotelUndo(BookingActivities):
    """The hotel's undo endpoint is broken for good."""

    @activity.defn(name="undo_book_hotel")
    async def undo_book_hotel(self, book_input: BookVacationInput) -> UndoReport:
        raise ApplicationError("hotel undo endpoint returned 500")


async def test_undo_that_keeps_failing_is_recorded_and_later_undos_still_run(
    client: Client,
) -> None:
    activities = StuckHotelUndo(quick_activities().simulation)
    handle, state = await run_booking(client, activities, trip(flight="invalid-flight-id"))

    assert state.outcome is Outcome.CANCELLED
    assert state.compensations == [
        Compensation(Leg.FLIGHT, NOTHING),
        Compensation(
            Leg.HOTEL,
            UndoOutcome.NEEDS_ATTENTION,
            "hotel undo endpoint returned 500 (no attempts left)",
        ),
        Compensation(Leg.CAR, RELEASED),
    ]
    assert (await activity_runs(handle))[-2:] == [
        ran("undo_book_hotel", 4, "failed"),
        ran("undo_book_car"),
    ]
    held = {leg: len(p.held()) for leg, p in activities.providers.items()}
    assert held == {Leg.CAR: 0, Leg.HOTEL: 1, Leg.FLIGHT: 0}


class GatedFlight(BookingActivities):
    """The airline answers only when the test says so."""

    def __init__(self) -> None:
        super().__init__(quick_activities().simulation)
        self.flight_called = asyncio.Event()
        self.answer_flight = asyncio.Event()

    @activity.defn(name="book_flight")
    async def book_flight(self, book_input: BookVacationInput) -> Reservation:
        self.flight_called.set()
        await self.answer_flight.wait()
        return await super().book_flight(book_input)


async def test_progress_query_shows_each_leg_while_the_saga_runs(client: Client) -> None:
    activities = GatedFlight()
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, trip(), id=f"wf-{task_queue}", task_queue=task_queue
        )
        await asyncio.wait_for(activities.flight_called.wait(), 30)
        during = await handle.query(BookingWorkflow.progress)
        activities.answer_flight.set()
        done = await handle.result()

    assert during.outcome is Outcome.BOOKING
    assert [(leg.leg, leg.status) for leg in during.legs] == [
        (Leg.CAR, LegStatus.BOOKED),
        (Leg.HOTEL, LegStatus.BOOKED),
        (Leg.FLIGHT, LegStatus.PENDING),
    ]
    assert (
        during.legs[0].reservation_id
        == activities.providers[Leg.CAR].held().popitem()[1].reservation_id
    )
    assert done.outcome is Outcome.CONFIRMED
    assert isinstance(done, BookingState)
    assert [leg.status for leg in done.legs] == [LegStatus.BOOKED] * 3


async def test_cancelling_a_running_booking_undoes_every_leg_attempted_once_it_returns(
    client: Client,
) -> None:
    activities = GatedFlight()
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, trip(), id=f"wf-{task_queue}", task_queue=task_queue
        )
        await asyncio.wait_for(activities.flight_called.wait(), 30)
        await handle.cancel()
        await asyncio.sleep(1)  # the airline answers late, after the cancel request
        activities.answer_flight.set()
        state = await handle.result()

    assert state.outcome is Outcome.CANCELLED
    assert state.reason == "cancelled by request"
    assert state.failed_leg is Leg.FLIGHT
    assert state.compensations == [
        Compensation(Leg.FLIGHT, RELEASED),
        Compensation(Leg.HOTEL, RELEASED),
        Compensation(Leg.CAR, RELEASED),
    ]
    assert all(not p.held() for p in activities.providers.values())
