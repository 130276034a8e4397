"""The provider calls: book a car, a hotel and a flight, and undo each booking.

The three providers are simulated. Each holds reservations keyed by an
idempotency key made of the booking's workflow id and the leg, so an activity
that Temporal runs twice (a retry after a lost answer) holds one reservation,
and an undo that finds nothing to release says so instead of failing.
"""

import asyncio
import itertools
from collections.abc import Callable, Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from config import Simulation
from shared import BookVacationInput, Leg, Reservation, UndoReport

REJECTED = "BookingRejected"
"""Error type of a business rejection: retrying cannot change the answer."""

UNAVAILABLE = "ProviderUnavailable"
"""Error type of a transient outage: a retry may succeed."""


BENIGN = ApplicationErrorCategory.BENIGN
"""Both failures are expected business events: the SDK logs them at DEBUG,
without a traceback, and leaves them out of its failure metrics."""


class BookingRejectedError(Exception):
    """The provider refuses the booking (an unknown or invalid item)."""


class Provider:
    """A simulated rental, hotel or airline service, in this process's memory."""

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self._held: dict[str, Reservation] = {}
        self._numbers = itertools.count(1)

    def reserve(self, key: str, item_id: str) -> Reservation:
        """Hold `item_id` under `key`; the same key again returns the same hold."""
        if "invalid" in item_id:
            raise BookingRejectedError(f"Invalid {self.leg} booking: {item_id!r}")
        if key not in self._held:
            number = next(self._numbers)
            self._held[key] = Reservation(self.leg, item_id, f"{self.leg}-{number}")
        return self._held[key]

    def release(self, key: str) -> bool:
        """Drop the hold under `key`; return whether there was one."""
        return self._held.pop(key, None) is not None

    def held(self) -> dict[str, Reservation]:
        """Return a copy of every reservation held, by idempotency key."""
        return dict(self._held)


def idempotency_key(leg: Leg) -> str:
    """Return the key of this booking's reservation for `leg`.

    Built from the workflow id, never the attempt or activity id, so that every
    attempt of the booking step and of its undo names the same reservation.
    """
    return f"{activity.info().workflow_id}/{leg}"


class BookingActivities:
    """The activities, bound to the providers they call."""

    def __init__(
        self,
        simulation: Simulation,
        providers: Mapping[Leg, Provider] | None = None,
    ) -> None:
        self.simulation = simulation
        self.providers = providers or {leg: Provider(leg) for leg in Leg}

    def all(self) -> list[Callable[..., object]]:
        """Return every activity, for the worker to register."""
        return [
            self.book_car,
            self.book_hotel,
            self.book_flight,
            self.undo_book_car,
            self.undo_book_hotel,
            self.undo_book_flight,
        ]

    @activity.defn
    async def book_car(self, book_input: BookVacationInput) -> Reservation:
        """Reserve the car."""
        return await self._book(Leg.CAR, book_input.book_car_id)

    @activity.defn
    async def book_hotel(self, book_input: BookVacationInput) -> Reservation:
        """Reserve the hotel room (the hotel is down on the first attempt)."""
        if self.simulation.hotel_outage and activity.info().attempt == 1:
            await self._provider_call()
            raise ApplicationError("Hotel service is down", type=UNAVAILABLE, category=BENIGN)
        return await self._book(Leg.HOTEL, book_input.book_hotel_id)

    @activity.defn
    async def book_flight(self, book_input: BookVacationInput) -> Reservation:
        """Reserve the flight."""
        return await self._book(Leg.FLIGHT, book_input.book_flight_id)

    @activity.defn
    async def undo_book_car(self, book_input: BookVacationInput) -> UndoReport:
        """Release the car, if this booking holds one."""
        return await self._undo(Leg.CAR)

    @activity.defn
    async def undo_book_hotel(self, book_input: BookVacationInput) -> UndoReport:
        """Release the hotel room, if this booking holds one."""
        return await self._undo(Leg.HOTEL)

    @activity.defn
    async def undo_book_flight(self, book_input: BookVacationInput) -> UndoReport:
        """Release the flight, if this booking holds one."""
        return await self._undo(Leg.FLIGHT)

    async def _book(self, leg: Leg, item_id: str) -> Reservation:
        await self._provider_call()
        try:
            reservation = self.providers[leg].reserve(idempotency_key(leg), item_id)
        except BookingRejectedError as err:
            raise ApplicationError(
                str(err), type=REJECTED, non_retryable=True, category=BENIGN
            ) from None
        activity.logger.info("Booked %s %s as %s", leg, item_id, reservation.reservation_id)
        return reservation

    async def _undo(self, leg: Leg) -> UndoReport:
        await self._provider_call()
        released = self.providers[leg].release(idempotency_key(leg))
        activity.logger.info("Undo %s: %s", leg, "released" if released else "nothing to undo")
        return UndoReport(leg, released)

    async def _provider_call(self) -> None:
        if self.simulation.latency_seconds:
            await asyncio.sleep(self.simulation.latency_seconds)
