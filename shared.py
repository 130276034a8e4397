"""Data passed between the API, the workflow and the activities.

Data and constants only: the workflow sandbox imports this module, so it does
no I/O and reads no environment.

The project's words, one name per thing:

- booking: one trip booked as one saga, one `BookingWorkflow` run.
- `user_id`: a booking's id, which is its workflow id (the tutorial's name,
  in the JSON and in log lines as `user_id=`); `BookVacationInput` carries it
  in as `book_user_id`, as the tutorial names the input's fields.
- leg: the car, the hotel or the flight (`Leg`); its step is the activity that
  books it (`book_hotel`), its undo the compensation (`undo_book_hotel`).
- `Outcome`: where a whole booking stands, kept in Temporal as the
  `BookingStatus` search attribute (the API's answer about one booking is
  its `BookingView`).
- customer: the traveller, by the name as given (`BookingCustomer`); client:
  the API's caller, by its key's name (`BookingClient`).
- reservation: a provider's hold on an item, filed under a key made of the
  `user_id` and the leg; an `Idempotency-Key` is the HTTP header by which a
  client names a booking it may send twice.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

TASK_QUEUE_NAME = "saga-task-queue"

DEPLOYMENT_NAME = "saga-booking"
"""The worker deployment the saga's workers belong to, one version per change to the saga."""

BOOKING_STATUS = SearchAttributeKey.for_keyword("BookingStatus")
"""Where a booking stands (an `Outcome`), kept current by the workflow."""

BOOKING_CUSTOMER = SearchAttributeKey.for_keyword("BookingCustomer")
"""The traveller's name as given, set when the booking starts."""

BOOKING_CLIENT = SearchAttributeKey.for_keyword("BookingClient")
"""The API client that made the booking, by its key's name; absent while the API is open."""

SEARCH_ATTRIBUTES = (BOOKING_STATUS, BOOKING_CUSTOMER, BOOKING_CLIENT)
"""The search attributes a namespace must have before a worker may serve it."""


DEFAULT_DEADLINE_SECONDS = 300
"""How long a trip may take to book before the saga gives up and undoes it."""

MAX_DEADLINE_SECONDS = 3600

DEFAULT_REMINDER_SECONDS = 3600
"""How often a booking that waits for a person says so again (an ERROR line and a metric)."""

MAX_NOTE_LENGTH = 500
"""The longest note a person may leave when resolving a leg by hand."""


@dataclass(frozen=True)
class BookVacationInput:
    """What a trip booking asks for.

    `attempts` caps each booking step's tries and `undo_attempts` each undo's,
    after which the leg needs attention: the booking waits for a person,
    reminding every `reminder_seconds`. `parallel_undo` runs the undos at
    once instead of in reverse order. A trip not fully booked within
    `deadline_seconds` of its start is undone.
    """

    attempts: int
    book_user_id: str
    book_car_id: str
    book_hotel_id: str
    book_flight_id: str
    undo_attempts: int = 10
    parallel_undo: bool = False
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    reminder_seconds: int = DEFAULT_REMINDER_SECONDS


class Leg(StrEnum):
    """One part of the trip, booked with its own provider."""

    CAR = "car"
    HOTEL = "hotel"
    FLIGHT = "flight"


class LegStatus(StrEnum):
    """Where a leg's booking step stands."""

    PENDING = "pending"
    BOOKED = "booked"
    FAILED = "failed"


class UndoOutcome(StrEnum):
    """What a leg's compensation did."""

    RELEASED = "released"
    NOTHING_TO_UNDO = "nothing to undo"
    NEEDS_ATTENTION = "needs attention"
    """The undo kept failing, or was refused: the leg may still be held; a person decides."""
    RESOLVED = "resolved by hand"
    """A person released it by other means, and said so (`Resolution`)."""


class Outcome(StrEnum):
    """Where the whole booking stands."""

    BOOKING = "booking"
    COMPENSATING = "compensating"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs attention"
    """Undone but for a leg whose undo kept failing: it waits for a person's decision."""


@dataclass(frozen=True)
class Reservation:
    """A provider's confirmation that it holds an item for this booking."""

    leg: Leg
    item_id: str
    reservation_id: str


@dataclass(frozen=True)
class UndoReport:
    """A provider's answer to an undo: whether it released anything."""

    leg: Leg
    released: bool


@dataclass
class LegState:
    """One leg as the workflow sees it."""

    leg: Leg
    item_id: str
    status: LegStatus = LegStatus.PENDING
    reservation_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Compensation:
    """One leg's undo, in the order the undos ran, and what a person decided about it."""

    leg: Leg
    outcome: UndoOutcome
    error: str | None = None
    """Why the undo failed: while it needs attention, and once resolved by hand."""
    since: datetime | None = None
    """When the leg first needed attention (None: it never did)."""
    retries: int = 0
    """How many times a person ran the undo again (`retry_undo`)."""
    decided_by: str | None = None
    """Who ended its wait: by a retry that worked, or by resolving it."""
    note: str | None = None
    """Why it was resolved by hand, in the words of who did."""


@dataclass(frozen=True)
class RetryUndo:
    """A person's decision: run a leg's undo again, with a fresh set of attempts."""

    leg: Leg
    by: str
    """Who decided: an operator's name."""


@dataclass(frozen=True)
class Resolution:
    """A person's decision: the leg was released by other means, as `note` says."""

    leg: Leg
    note: str
    by: str


@dataclass
class BookingState:
    """The saga's state: its result when done, its progress while running."""

    user_id: str
    legs: list[LegState]
    outcome: Outcome = Outcome.BOOKING
    failed_leg: Leg | None = None
    reason: str | None = None
    compensations: list[Compensation] = field(default_factory=list)
    trace_id: str = ""
    """The booking's OpenTelemetry trace, 32 hex digits; empty where it is not traced."""

    @property
    def cancelled(self) -> bool:
        """Whether the trip was rolled back instead of booked."""
        return self.outcome is Outcome.CANCELLED

    def leg(self, leg: Leg) -> LegState:
        """Return the state of one leg."""
        return next(state for state in self.legs if state.leg == leg)

    def undo_of(self, leg: Leg) -> Compensation | None:
        """Return one leg's compensation, if its undo has run."""
        return next((c for c in self.compensations if c.leg == leg), None)

    @property
    def awaiting(self) -> list[Compensation]:
        """The compensations that wait for a person's decision."""
        return [c for c in self.compensations if c.outcome is UndoOutcome.NEEDS_ATTENTION]


def log_line(event: str, user_id: str, leg: Leg | None = None, **fields: object) -> str:
    """Return one saga transition of booking `user_id` as a `key=value` log line.

    Values with spaces are quoted.
    """
    pairs = {"event": event, "user_id": user_id, "leg": leg, **fields}
    return "saga " + " ".join(
        f"{key}={json.dumps(str(value)) if ' ' in str(value) else value}"
        for key, value in pairs.items()
        if value is not None
    )


def search_attributes_at_start(customer: str, client: str | None = None) -> TypedSearchAttributes:
    """Return a booking's search attributes as it starts: `booking`, for `customer`, by `client`."""
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(BOOKING_STATUS, Outcome.BOOKING.value),
        SearchAttributePair(BOOKING_CUSTOMER, customer),
    ]
    if client is not None:
        pairs.append(SearchAttributePair(BOOKING_CLIENT, client))
    return TypedSearchAttributes(pairs)


def type_name(kind: int) -> str:
    """Return a search attribute type as the CLI names it: `Keyword`, `KeywordList`."""
    try:
        name = IndexedValueType.Name(IndexedValueType.ValueType(kind))
    except ValueError:
        return f"type {kind}"
    return "".join(word.capitalize() for word in name.split("_")[3:])
