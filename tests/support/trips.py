"""Trips to book: the tutorial's two request bodies, workflow inputs, a held airline,
and following a booking over HTTP to its end."""

import asyncio
import time
import uuid
from typing import Any

from flask.testing import FlaskClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import BookingActivities
from shared import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_REMINDER_SECONDS,
    BookVacationInput,
    Reservation,
    UndoReport,
)

JOHN = {
    "name": "John Doe",
    "attempts": 5,
    "car": "valid-car-id",
    "hotel": "valid-hotel-id",
    "flight": "valid-flight-id",
}
"""The tutorial's first request body: a trip that books."""

JANE = {**JOHN, "name": "Jane Smith", "attempts": 3, "hotel": "invalid-hotel-id"}
"""The tutorial's second: the hotel is rejected, the car given back."""

JOHN_BOOKED = {
    "cancelled": False,
    "car": "Car: valid-car-id",
    "hotel": "Hotel: valid-hotel-id",
    "flight": "Flight: valid-flight-id",
    "result": "Booked car: valid-car-id Booked hotel: valid-hotel-id "
    "Booked flight: valid-flight-id",
}
"""The tutorial's answer to JOHN's booking, less its `user_id`."""


def trip(
    *,
    car: str = "valid-car-id",
    hotel: str = "valid-hotel-id",
    flight: str = "valid-flight-id",
    attempts: int = 5,
    undo_attempts: int = 10,
    parallel_undo: bool = False,
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS,
    reminder_seconds: int = DEFAULT_REMINDER_SECONDS,
) -> BookVacationInput:
    return BookVacationInput(
        attempts=attempts,
        book_user_id=f"test-{uuid.uuid4()}",
        book_car_id=car,
        book_hotel_id=hotel,
        book_flight_id=flight,
        undo_attempts=undo_attempts,
        parallel_undo=parallel_undo,
        deadline_seconds=deadline_seconds,
        reminder_seconds=reminder_seconds,
    )


class Gate:
    """Holds a provider's answer until the test opens it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def hold(self) -> None:
        """Say the call has arrived, then wait for the test to let it answer."""
        self.reached.set()
        await self.opened.wait()


class GatedFlight(BookingActivities):
    """The airline answers only when the test opens its gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = Gate()

    @activity.defn(name="book_flight")
    async def book_flight(self, book_input: BookVacationInput) -> Reservation:
        await self.gate.hold()
        return await super().book_flight(book_input)


HOLD_SECONDS = 5.0
"""Longest one held attempt waits (under the activity's 10 s start-to-close), then it
asks to be retried, and waits again."""


class HeldCar(BookingActivities):
    """The car rental takes every call and answers none until the test opens it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.opened = asyncio.Event()
        self.reached: set[str] = set()

    @activity.defn(name="book_car")
    async def book_car(self, book_input: BookVacationInput) -> Reservation:
        self.reached.add(book_input.book_user_id)
        try:
            await asyncio.wait_for(self.opened.wait(), HOLD_SECONDS)
        except TimeoutError:
            raise ApplicationError("held by the test", type="ProviderDown") from None
        return await super().book_car(book_input)


BROKEN = "hotel undo endpoint returned 500"


class BrokenHotelUndo(BookingActivities):
    """The hotel's undo (and the car's, if `car_broken`) fails until the test mends it.

    `refuse` makes the hotel's a refusal for good.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.mended = False
        self.refuse = False
        self.car_broken = False

    @activity.defn(name="undo_book_hotel")
    async def undo_book_hotel(self, book_input: BookVacationInput) -> UndoReport:
        if self.refuse:
            raise ApplicationError("no such booking here", type="Refused", non_retryable=True)
        if not self.mended:
            raise ApplicationError(BROKEN)
        return await super().undo_book_hotel(book_input)

    @activity.defn(name="undo_book_car")
    async def undo_book_car(self, book_input: BookVacationInput) -> UndoReport:
        if self.car_broken and not self.mended:
            raise ApplicationError("car undo endpoint returned 500")
        return await super().undo_book_car(book_input)


def final_status(
    http: FlaskClient, url: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll a booking's status URL (with `headers`: a key) until the booking has ended."""
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = http.get(url, headers=headers).get_json()
        if body["status"] in ("confirmed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def listed_with(
    http: FlaskClient, status: str, user_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Poll `GET /bookings?status=...` until it lists `user_id` (visibility lags); return it."""
    deadline = time.monotonic() + 30
    while True:
        listed: dict[str, Any] = http.get(f"/bookings?status={status}", headers=headers).get_json()
        if user_id in [booking["user_id"] for booking in listed["bookings"]]:
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.1)
