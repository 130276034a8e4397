"""The provider calls: book a car, a hotel and a flight, and undo each booking, over HTTP.

Temporal runs an activity at least once: a worker that dies after the
provider acted, but before it reported back, makes the activity run again;
so does an answer lost on the network. So every call carries an
`Idempotency-Key` made of the booking's workflow id and the leg (never the
attempt), and the providers hold one reservation per key however often they
are asked, whichever worker asks. What a provider answers decides the retry:
a refusal (a 4xx but 408, 409, 429) is raised non-retryable, and the saga
undoes; an outage (5xx), a "later" (408, 409, 429), a timeout, no answer at
all or one that cannot be read is raised retryable, and Temporal tries again
with the workflow's retry policy.
"""

from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from opentelemetry import trace
from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from shared import BookVacationInput, Leg, Reservation, UndoReport, log_line

REJECTED = "BookingRejected"
"""Error type of a refusal (a 4xx but 408, 409, 429): retrying cannot change the answer."""

UNAVAILABLE = "ProviderUnavailable"
"""Error type of a transient failure (5xx, 408, 409, 429, a timeout, no or an unreadable
answer): a retry may succeed."""

BENIGN = ApplicationErrorCategory.BENIGN
"""Both failures are expected business events: the SDK logs them at DEBUG,
without a traceback, and leaves them out of its failure metrics."""

CALL_TIMEOUT = timedelta(seconds=5)
"""Longest one provider call may take: under the steps' 10 s start-to-close
(`workflows.STEP_TIMEOUT`), so a provider that hangs fails this attempt with
a message that says so, and the next attempt starts in good time."""

RETRIED_4XX = frozenset(
    {HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.CONFLICT, HTTPStatus.TOO_MANY_REQUESTS}
)
"""The client errors that say "later", not "no": 409 is the IETF idempotency-key
draft's answer while a request under the same key is still in flight."""

T = TypeVar("T")

RESERVATION = TypeAdapter(Reservation)
UNDO_REPORT = TypeAdapter(UndoReport)
"""The providers' answers are the dataclasses themselves, as JSON."""


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


class ProviderClient:
    """The worker's one HTTP client for the providers at `url`: pooled connections, one timeout.

    Its session is opened on the first call, on the loop the activities run on,
    and kept for every call after it.
    """

    def __init__(self, url: str, timeout: timedelta = CALL_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def book(self, leg: Leg, key: str, user_id: str, item_id: str) -> Reservation:
        """Ask `leg`'s provider to hold `item_id` under `key`."""
        body = {"user_id": user_id, "item_id": item_id}
        return await self._call(leg, "book", key, body, RESERVATION)

    async def undo(self, leg: Leg, key: str, user_id: str) -> UndoReport:
        """Ask `leg`'s provider to release what `key` holds."""
        return await self._call(leg, "undo", key, {"user_id": user_id}, UNDO_REPORT)

    async def healthy(self) -> bool:
        """Return whether the providers answer their health check (a worker asks as it starts)."""
        try:
            async with self._open().get(f"{self.url}/healthz") as response:
                return response.status == HTTPStatus.OK
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        """Close the session's connections (the worker does, as it stops)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        """Return the session, opening it on the running loop the first time."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout.total_seconds())
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _call(
        self, leg: Leg, action: str, key: str, body: dict[str, str], answer: TypeAdapter[T]
    ) -> T:
        # The key is sent as the IETF draft's quoted string, percent-encoded inside.
        headers = {"Idempotency-Key": f'"{quote(key, safe="/")}"'}
        url = f"{self.url}/{leg}/{action}"
        try:
            async with self._open().post(url, json=body, headers=headers) as response:
                if response.status >= 400:
                    raise await _refusal(leg, response)
                said = await response.read()
            return answer.validate_json(said)
        except ValidationError:  # not JSON, or not the shape asked for: retried, and said
            raise _unavailable(f"the {leg} provider's answer cannot be read") from None
        except TimeoutError:
            message = f"the {leg} provider did not answer within {self.timeout.total_seconds():g} s"
            raise _unavailable(message) from None
        except aiohttp.ClientError as err:
            raise _unavailable(f"the {leg} provider did not answer ({err})") from None


class BookingActivities:
    """The activities, bound to the providers they call."""

    def __init__(self, providers: ProviderClient) -> None:
        self.providers = providers

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
        """Reserve the hotel room (the simulated hotel is down the first time a booking asks)."""
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
        try:
            reservation = await self.providers.book(leg, idempotency_key(leg), user_id(), item_id)
        except ApplicationError as err:
            raise _failed(leg, err) from None
        _log("booked", leg, reservation=reservation.reservation_id)
        return reservation

    async def _undo(self, leg: Leg) -> UndoReport:
        try:
            report = await self.providers.undo(leg, idempotency_key(leg), user_id())
        except ApplicationError as err:
            raise _failed(leg, err) from None
        _log("released" if report.released else "nothing-to-undo", leg)
        return report


async def _refusal(leg: Leg, response: aiohttp.ClientResponse) -> ApplicationError:
    """Return the error for a provider's problem answer: a refusal, unless it says "later"."""
    detail = await _detail(leg, response)
    if response.status < 500 and response.status not in RETRIED_4XX:
        return ApplicationError(detail, type=REJECTED, non_retryable=True, category=BENIGN)
    return _unavailable(detail)


async def _detail(leg: Leg, response: aiohttp.ClientResponse) -> str:
    """Return what the provider said went wrong (its problem's detail), or its status."""
    said: Any = None
    with suppress(ValueError):  # not JSON: a proxy's page, say
        said = await response.json(content_type=None)
    detail = said.get("detail") if isinstance(said, dict) else None
    if isinstance(detail, str):
        return detail
    return f"the {leg} provider answered {response.status} {response.reason}"


def _log(event: str, leg: Leg, **fields: str) -> None:
    """Log what a provider call did, and say the same on this attempt's span, if traced."""
    info = activity.info()
    line = log_line(event, user_id(), leg, step=info.activity_type, attempt=info.attempt, **fields)
    activity.logger.info(line)
    said = {f"booking.{name}": value for name, value in fields.items()}
    trace.get_current_span().set_attributes(
        {"booking.id": user_id(), "booking.leg": leg.value, "booking.attempt": info.attempt}
        | {"booking.event": event, **said}
    )


def _failed(leg: Leg, error: ApplicationError) -> ApplicationError:
    """Log a provider call that failed, and return its error to raise."""
    _log("rejected" if error.non_retryable else "provider-down", leg, error=error.message)
    return error


def _unavailable(message: str) -> ApplicationError:
    return ApplicationError(message, type=UNAVAILABLE, category=BENIGN)
