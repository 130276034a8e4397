"""The providers' stores and the activities around them, without a server."""

import dataclasses
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import REJECTED, UNAVAILABLE
from providers import BookingRejectedError, ProviderStore, RowStatus
from shared import Leg, Reservation, UndoReport
from tests.support.trips import trip
from tests.support.workers import quick_activities


@pytest.fixture
def hotel(tmp_path: Path) -> ProviderStore:
    return ProviderStore(Leg.HOTEL, tmp_path / "hotel.db")


def test_booking_twice_under_one_key_holds_one_reservation(hotel: ProviderStore) -> None:
    first = hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    again = hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    other = hotel.reserve("jane-smith-2/hotel", "jane-smith-2", "valid-hotel-id")

    assert first == again != other
    assert set(hotel.held()) == {"john-doe-1/hotel", "jane-smith-2/hotel"}


def test_undo_releases_once_and_repeats_its_answer(hotel: ProviderStore) -> None:
    hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")

    answers = [hotel.release("john-doe-1/hotel", "john-doe-1") for _ in range(2)]

    assert answers == [True, True]
    assert hotel.held() == {}
    assert [row.status for row in hotel.rows()] == [RowStatus.RELEASED]


def test_undo_of_nothing_is_a_no_op_that_refuses_a_late_booking(hotel: ProviderStore) -> None:
    assert hotel.release("john-doe-1/hotel", "john-doe-1") is False
    assert hotel.release("john-doe-1/hotel", "john-doe-1") is False

    with pytest.raises(BookingRejectedError, match="already undone"):
        hotel.reserve("john-doe-1/hotel", "john-doe-1", "valid-hotel-id")
    assert hotel.held() == {}


def test_invalid_item_is_rejected_and_holds_nothing(hotel: ProviderStore) -> None:
    with pytest.raises(BookingRejectedError, match="invalid-hotel-id"):
        hotel.reserve("john-doe-1/hotel", "john-doe-1", "invalid-hotel-id")
    assert hotel.rows() == []


def test_finite_stock_sells_out_and_a_release_frees_it(tmp_path: Path) -> None:
    car = ProviderStore(Leg.CAR, tmp_path / "car.db", stock=1)
    car.reserve("a/car", "a", "mini")

    with pytest.raises(BookingRejectedError, match="sold out"):
        car.reserve("b/car", "b", "mini")
    car.release("a/car", "a")
    car.reserve("b/car", "b", "mini")

    assert set(car.held()) == {"b/car"}


def test_two_processes_share_one_store(tmp_path: Path) -> None:
    one = ProviderStore(Leg.FLIGHT, tmp_path / "flight.db")
    two = ProviderStore(Leg.FLIGHT, tmp_path / "flight.db")  # as a second worker opens it

    assert one.reserve("a/flight", "a", "LH1") == two.reserve("a/flight", "a", "LH1")
    assert len(two.held()) == 1


def attempt(number: int, workflow_id: str = "john-doe-1") -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number, workflow_id=workflow_id)
    return env


async def test_hotel_is_down_on_the_first_attempt_only(tmp_path: Path) -> None:
    activities = quick_activities(tmp_path)

    with pytest.raises(ApplicationError) as outage:
        await attempt(1).run(activities.book_hotel, trip())
    room = await attempt(2).run(activities.book_hotel, trip())

    assert (outage.value.type, outage.value.non_retryable) == (UNAVAILABLE, False)
    assert room == Reservation(Leg.HOTEL, "valid-hotel-id", "hotel-1")


async def test_rejection_is_a_non_retryable_application_error(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as rejected:
        await attempt(1).run(quick_activities(tmp_path).book_car, trip(car="invalid-car-id"))
    assert (rejected.value.type, rejected.value.non_retryable) == (REJECTED, True)


async def test_a_repeated_booking_step_holds_one_reservation_and_one_undo_frees_it(
    tmp_path: Path,
) -> None:
    activities = quick_activities(tmp_path, hotel_outage=False)
    booking = trip()

    first = await attempt(1).run(activities.book_hotel, booking)
    second = await attempt(2).run(activities.book_hotel, booking)
    undo = await attempt(1).run(activities.undo_book_hotel, booking)
    undo_again = await attempt(2).run(activities.undo_book_hotel, booking)

    assert first == second
    assert (undo, undo_again) == (UndoReport(Leg.HOTEL, True), UndoReport(Leg.HOTEL, True))
    assert activities.providers[Leg.HOTEL].held() == {}
