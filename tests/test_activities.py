"""The simulated providers and the activities around them, without a server."""

import dataclasses

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import REJECTED, UNAVAILABLE, BookingRejectedError, Provider
from helpers import quick_activities, trip
from shared import Leg, Reservation, UndoReport


def test_same_key_holds_one_reservation() -> None:
    hotel = Provider(Leg.HOTEL)

    first = hotel.reserve("john-doe-1/hotel", "valid-hotel-id")
    again = hotel.reserve("john-doe-1/hotel", "valid-hotel-id")
    other = hotel.reserve("jane-smith-2/hotel", "valid-hotel-id")

    assert first == again != other
    assert set(hotel.held()) == {"john-doe-1/hotel", "jane-smith-2/hotel"}


def test_release_reports_whether_anything_was_held() -> None:
    car = Provider(Leg.CAR)
    car.reserve("john-doe-1/car", "valid-car-id")

    assert [car.release("john-doe-1/car"), car.release("john-doe-1/car")] == [True, False]
    assert car.held() == {}


def test_invalid_item_is_rejected_and_holds_nothing() -> None:
    flight = Provider(Leg.FLIGHT)
    with pytest.raises(BookingRejectedError, match="invalid-flight-id"):
        flight.reserve("john-doe-1/flight", "invalid-flight-id")
    assert flight.held() == {}


def attempt(number: int, workflow_id: str = "john-doe-1") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number, workflow_id=workflow_id)
    return env


async def test_hotel_is_down_on_the_first_attempt_only() -> None:
    activities = quick_activities()

    with pytest.raises(ApplicationError) as outage:
        await attempt(1).run(activities.book_hotel, trip())
    room = await attempt(2).run(activities.book_hotel, trip())

    assert (outage.value.type, outage.value.non_retryable) == (UNAVAILABLE, False)
    assert room == Reservation(Leg.HOTEL, "valid-hotel-id", "hotel-1")


async def test_rejection_is_a_non_retryable_application_error() -> None:
    with pytest.raises(ApplicationError) as rejected:
        await attempt(1).run(quick_activities().book_car, trip(car="invalid-car-id"))
    assert (rejected.value.type, rejected.value.non_retryable) == (REJECTED, True)


async def test_a_repeated_booking_step_holds_one_reservation_and_one_undo_frees_it() -> None:
    activities = quick_activities(hotel_outage=False)
    booking = trip()

    first = await attempt(1).run(activities.book_hotel, booking)
    second = await attempt(2).run(activities.book_hotel, booking)
    undo = await attempt(1).run(activities.undo_book_hotel, booking)
    undo_again = await attempt(2).run(activities.undo_book_hotel, booking)

    assert first == second
    assert (undo, undo_again) == (UndoReport(Leg.HOTEL, True), UndoReport(Leg.HOTEL, False))
    assert activities.providers[Leg.HOTEL].held() == {}
