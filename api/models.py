"""The models of the HTTP API's JSON: they validate requests and shape answers.

The OpenAPI document (`api/contract.py`) shows the same models as its
schemas, so neither can drift from the other.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from shared import (
    MAX_DEADLINE_SECONDS,
    MAX_NOTE_LENGTH,
    BookVacationInput,
    Leg,
    Outcome,
    UndoOutcome,
)


def _printable(value: str) -> str:
    # Names and ids end up in workflow ids, logs and the Web UI: no control or
    # format characters (a zero-width space, a right-to-left override).
    if not value.strip() or not value.isprintable():
        raise PydanticCustomError("printable", "must be printable text, not blank")
    return value


Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        # What a JSON Schema regex can say portably; the validator also refuses
        # format, surrogate, private-use and unassigned characters (str.isprintable).
        pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
        description="printable text, not blank: no control or format characters",
    ),
    AfterValidator(_printable),
]


def _whole_number(value: object) -> object:
    # JSON does not tell 5 from 5.0, nor does JSON Schema's "integer": take both.
    # A string or a boolean stays what it is, and strict mode refuses it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The Field first: its bounds then reach the JSON Schema as minimum and maximum.
Attempts = Annotated[int, Field(ge=1, le=10), BeforeValidator(_whole_number)]

DeadlineSeconds = Annotated[
    int, Field(ge=1, le=MAX_DEADLINE_SECONDS), BeforeValidator(_whole_number)
]


class BookingRequest(BaseModel):
    """The body of `POST /book` and `POST /bookings`, as the tutorial sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text
    attempts: Attempts
    car: Text
    hotel: Text
    flight: Text
    deadline_seconds: DeadlineSeconds | None = Field(
        None,
        description="undo the trip if it is not fully booked this many seconds after its "
        "start; none given: BOOKING_DEADLINE_SECONDS (300 by default)",
    )

    def to_input(self, user_id: str, deadline_seconds: int) -> BookVacationInput:
        """Return the workflow input; `deadline_seconds` unless the request gives its own."""
        return BookVacationInput(
            attempts=self.attempts,
            book_user_id=user_id,
            book_car_id=self.car,
            book_hotel_id=self.hotel,
            book_flight_id=self.flight,
            deadline_seconds=self.deadline_seconds or deadline_seconds,
        )


class TripBooked(BaseModel):
    """The tutorial's answer for a booked trip."""

    user_id: str
    cancelled: Literal[False]
    car: str = Field(examples=["Car: valid-car-id"])
    hotel: str
    flight: str
    result: str


class UndoDone(BaseModel):
    """One undo that ran, in the order the undos ran, and what a person decided about it."""

    step: Leg
    outcome: UndoOutcome
    error: str | None = None
    needs_attention_since: datetime | None = Field(
        None, description="when the undo first needed a person: absent if it never did"
    )
    retries: int | None = Field(None, description="how many times a person ran the undo again")
    decided_by: str | None = Field(
        None, description="who ended the wait: by a retry that worked, or by resolving it"
    )
    note: str | None = Field(None, description="how it was resolved by hand, as its decider said")


class TripCancelled(BaseModel):
    """The tutorial's answer for a cancelled trip, with what went wrong and what was undone."""

    user_id: str
    cancelled: Literal[True]
    result: Literal["Voyage cancelled"]
    reason: str | None = None
    failed_step: Leg | None = None
    compensations: list[UndoDone]


TripResult = TripBooked | TripCancelled

LegStateName = Literal[
    "pending",
    "booked",
    "failed",
    "released",
    "nothing to undo",
    "needs attention",
    "resolved by hand",
]


class Actions(BaseModel):
    """What an operator can do about a leg that needs attention: POST to one of these."""

    retry_undo: str = Field(description="run the leg's undo again")
    resolve: str = Field(description='say it was released by other means: {"note": "..."}')


class LegView(BaseModel):
    """One leg of a booking: what was asked for and where it stands."""

    item: str
    state: LegStateName
    reservation_id: str | None = None
    error: str | None = None
    needs_attention_since: datetime | None = None
    actions: Actions | None = Field(None, description="while the leg needs attention")


StatusName = Literal[
    "booking",
    "compensating",
    "needs attention",
    "confirmed",
    "cancelled",
    "failed",
    "terminated",
    "timed out",
]


class BookingView(BaseModel):
    """A booking as `GET /bookings/{user_id}` shows it."""

    user_id: str
    status: StatusName
    legs: dict[Leg, LegView] | None = None
    result: TripResult | None = None
    trace_id: Annotated[
        str | None,
        Field(description="the OpenTelemetry trace the booking runs in, where its worker traces"),
    ] = None


class ResolveRequest(BaseModel):
    """The body of `POST /bookings/{user_id}/legs/{leg}/resolve`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    note: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_NOTE_LENGTH,
            pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
            description="how the leg was released by other means (kept in the booking's result)",
        ),
        AfterValidator(_printable),
    ]


class Decided(BaseModel):
    """What a person's decision did to one leg of a booking."""

    user_id: str
    status_url: str
    undo: UndoDone


def _digits(value: object) -> object:
    # A number in a query string is digits alone: no sign, space, "_" or fraction.
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("digits", "must be a whole number, in digits")
    return value


def _matchable(value: str) -> str:
    # Visibility queries match neither, however escaped (tried on Temporal 1.32):
    # refused, so that the quoted value can never be closed (api/following.py).
    if '"' in value or "\\" in value:
        raise PydanticCustomError(
            "unmatchable", "cannot hold a double quote or a backslash: Temporal cannot match them"
        )
    return value


Customer = Annotated[
    Text,
    AfterValidator(_matchable),
    Field(json_schema_extra={"pattern": r'^[^"\\\x00-\x1f\x7f-\x9f]*$'}),
]


class BookingQuery(BaseModel):
    """The query parameters of `GET /bookings`: which bookings, and which page of them."""

    model_config = ConfigDict(extra="forbid")

    status: Outcome | None = Field(None, description="only bookings that stand here")
    customer: Customer | None = Field(
        None, description="only this traveller's bookings: the name exactly as booked"
    )
    page_size: Annotated[int, Field(ge=1, le=100), BeforeValidator(_digits)] = Field(
        20, description="bookings per page"
    )
    page_token: str | None = Field(
        None,
        max_length=4096,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the next page: the previous page's next_page_token",
    )


class BookingSummary(BaseModel):
    """One booking in a list of them."""

    user_id: str
    status: StatusName | None = Field(
        None, description="absent for a booking made before bookings kept a BookingStatus"
    )
    customer: str | None = None
    started_at: datetime


class BookingList(BaseModel):
    """A page of bookings: running ones first, then ended ones, newest first in each."""

    bookings: list[BookingSummary]
    next_page_token: str | None = Field(None, description="absent on the last page")


class BookingAccepted(BaseModel):
    """A booking that has started; its status lives at `status_url`."""

    user_id: str
    status: Literal["in progress"]
    status_url: str


class Health(BaseModel):
    """Liveness or readiness."""

    status: Literal["ok", "ready"]
    workers: int | None = None


class Problem(BaseModel):
    """An error, as RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    fields: dict[str, str] | None = Field(None, description="each invalid field, on a 400")
    user_id: str | None = Field(
        None,
        description="the booking concerned: on a 409 or 422, and on a 503 when Temporal "
        "did not confirm its start (it may have started)",
    )
    stuck: int | None = Field(
        None, description="on a 503 of /readyz: how many bookings cannot move"
    )
