"""The provider calls: book a car, a hotel and a flight, and undo each booking.

Temporal runs an activity at least once: a worker that dies after the
provider acted, but before it reported back, makes the activity run again.
So every call carries an idempotency key made of the booking's workflow id and
the leg (never the attempt), and the providers (`providers.py`) hold one
reservation per key however often they are asked.
"""

import asyncio
import random
from collections.abc import Callable, Mapping

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from providers import BookingRejectedError, ProviderStore, Simulation
from shared import BookVacationInput, Leg, Reservation, UndoReport, log_line

REJECTED = "BookingRejected"
"""Error type of a business rejection: retrying cannot change the answer."""

UNAVAILABLE = "ProviderUnavailable"
"""Error type of a transient failure (an outage, a lost answer): a retry may succeed."""

BENIGN = ApplicationErrorCategory.BENIGN
"""Both failures are expected business events: the SDK logs them at DEBUG,
without a traceback, and leaves them out of its failure metrics."""


def user_id() -> str:
    """Return the id (`user_id`) of the booking this activity works for: its workflow's id."""
    workflow_id = activity.info().workflow_id
    if workflow_id is None:
        raise ApplicationError("booking activities run inside BookingWorkflow", non_retryable=True)
    return workflow_id


def idempotency_key(leg: Leg) -> str:
    """Return the key of this booking's reservation for `leg`.

    Built from the workflow id, never the attempt or activity id, so that every
    attempt of the booking step and of its undo names the same reservation.
    """
    return f"{user_id()}/{leg}"


class BookingActivities:
    """The activities, bound to the providers they call and their simulated faults."""

    def __init__(self, simulation: Simulation, providers: Mapping[Leg, ProviderStore]) -> None:
        self.simulation = simulation
        self.providers = providers
        self._random = random.Random(simulation.seed)

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
            raise _failed("provider-down", Leg.HOTEL, _unavailable("Hotel service is down"))
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
        await self._reach(leg)
        if self._chance(self.simulation.of(leg).reject_rate):
            message = f"the {leg} provider refused {item_id!r} (simulated)"
            raise _failed("rejected", leg, _rejection(message))
        store, key = self.providers[leg], idempotency_key(leg)
        try:
            reservation = await asyncio.to_thread(store.reserve, key, user_id(), item_id)
        except BookingRejectedError as err:
            raise _failed("rejected", leg, _rejection(str(err))) from None
        await self._answer(leg)
        _log("booked", leg, reservation=reservation.reservation_id)
        return reservation

    async def _undo(self, leg: Leg) -> UndoReport:
        await self._reach(leg)
        store, key = self.providers[leg], idempotency_key(leg)
        released = await asyncio.to_thread(store.release, key, user_id())
        await self._answer(leg)
        _log("released" if released else "nothing-to-undo", leg)
        return UndoReport(leg, released)

    async def _reach(self, leg: Leg) -> None:
        """Fail as a provider that is down fails: before doing anything."""
        if self._chance(self.simulation.of(leg).outage_rate):
            raise _failed("provider-down", leg, _unavailable(f"the {leg} provider is down"))

    async def _answer(self, leg: Leg) -> None:
        """Answer as the provider answers: late, and now and then not at all."""
        delay = self.simulation.latency_seconds + self.simulation.of(leg).latency_seconds
        if delay:
            await asyncio.sleep(delay)
        if self._chance(self.simulation.of(leg).lost_reply_rate):
            lost = _unavailable(f"the {leg} provider's answer was lost (simulated)")
            raise _failed("answer-lost", leg, lost)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate


def _log(event: str, leg: Leg, **fields: object) -> None:
    info = activity.info()
    line = log_line(event, user_id(), leg, step=info.activity_type, attempt=info.attempt, **fields)
    activity.logger.info(line)


def _failed(event: str, leg: Leg, error: ApplicationError) -> ApplicationError:
    """Log a provider call that failed, and return its error to raise."""
    _log(event, leg, error=error.message)
    return error


def _unavailable(message: str) -> ApplicationError:
    return ApplicationError(message, type=UNAVAILABLE, category=BENIGN)


def _rejection(message: str) -> ApplicationError:
    return ApplicationError(message, type=REJECTED, non_retryable=True, category=BENIGN)
