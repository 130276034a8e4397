"""The HTTP API's contract: the models of its JSON, and the OpenAPI document.

The models validate requests and shape answers; the OpenAPI 3.1 document served
at /openapi.json is generated from the same models, so the two cannot drift.
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from shared import BookVacationInput, Leg, UndoOutcome


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


Attempts = Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=10)]


class BookingRequest(BaseModel):
    """The body of `POST /book` and `POST /bookings`, as the tutorial sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text
    attempts: Attempts
    car: Text
    hotel: Text
    flight: Text

    def to_input(self, user_id: str) -> BookVacationInput:
        """Return the workflow input for this request."""
        return BookVacationInput(
            attempts=self.attempts,
            book_user_id=user_id,
            book_car_id=self.car,
            book_hotel_id=self.hotel,
            book_flight_id=self.flight,
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
    """One undo that ran, in the order the undos ran."""

    step: Leg
    outcome: UndoOutcome
    error: str | None = None


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
    "pending", "booked", "failed", "released", "nothing to undo", "needs attention"
]


class LegView(BaseModel):
    """One leg of a booking: what was asked for and where it stands."""

    item: str
    state: LegStateName
    reservation_id: str | None = None
    error: str | None = None


StatusName = Literal[
    "booking", "compensating", "confirmed", "cancelled", "failed", "terminated", "timed out"
]


class BookingStatus(BaseModel):
    """A booking as `GET /bookings/{user_id}` shows it."""

    user_id: str
    status: StatusName
    legs: dict[Leg, LegView] | None = None
    result: TripResult | None = None


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
    user_id: str | None = Field(None, description="the booking concerned, on a 409 or 422")


MODELS: list[type[BaseModel]] = [
    BookingRequest,
    TripBooked,
    TripCancelled,
    BookingStatus,
    BookingAccepted,
    Health,
    Problem,
]

JSON = "application/json"
PROBLEM = "application/problem+json"

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe: the same key and body find the same booking; "
    "the same key with another body is a 422. A key lives as long as Temporal keeps the "
    "booking it names.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}

USER_ID = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _answer(
    description: str, schema: dict[str, Any], media: str = JSON, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if headers:
        answer["headers"] = {name: HEADERS[name] for name in headers}
    return answer


HEADERS = {
    "Location": {"description": "the booking's status URL", "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}},
}


def _problems(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "a field is missing or invalid, or the body is not a JSON object",
        404: "no such booking",
        409: "the booking has already ended",
        413: "the body is over 16 KiB",
        415: "the body is not sent as application/json",
        422: "the Idempotency-Key was used with another body",
        502: "Temporal refused a call for a reason other than availability",
        503: "Temporal or its workers cannot be reached now",
    }
    return {
        str(s): _answer(reasons[s], _ref(Problem), PROBLEM, ("Retry-After",) if s == 503 else ())
        for s in statuses
    }


def _booking_body() -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(BookingRequest)}}}


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the API."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    trip = {"oneOf": [_ref(TripBooked), _ref(TripCancelled)]}
    accepted = _answer(
        "the booking has started; see Location", _ref(BookingAccepted), headers=("Location",)
    )
    booking_errors = _problems(400, 413, 415, 422, 502, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Trip booking saga",
            "version": "1.0.0",
            "description": "Books a car, a hotel and a flight as one saga on Temporal.",
        },
        "paths": {
            "/book": {
                "post": {
                    "summary": "Book a trip and wait for the outcome (up to BOOK_WAIT_SECONDS)",
                    "operationId": "bookTrip",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": _booking_body(),
                    "responses": {
                        "200": _answer("the trip was booked, or cancelled and undone", trip),
                        "202": accepted,
                        **booking_errors,
                    },
                }
            },
            "/bookings": {
                "post": {
                    "summary": "Start a booking and answer at once",
                    "operationId": "startBooking",
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": _booking_body(),
                    "responses": {"202": accepted, **booking_errors},
                }
            },
            "/bookings/{user_id}": {
                "get": {
                    "summary": "A booking's legs while it runs, and its result once done",
                    "operationId": "getBooking",
                    "parameters": [USER_ID],
                    "responses": {
                        "200": _answer("the booking", _ref(BookingStatus)),
                        **_problems(404, 502, 503),
                    },
                }
            },
            "/bookings/{user_id}/cancel": {
                "post": {
                    "summary": "Cancel a running booking: its registered undos run",
                    "operationId": "cancelBooking",
                    "parameters": [USER_ID],
                    "responses": {
                        "202": _answer(
                            "cancellation requested", _ref(BookingAccepted), headers=("Location",)
                        ),
                        **_problems(404, 409, 502, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The API process is alive",
                    "operationId": "health",
                    "responses": {"200": _answer("alive", _ref(Health))},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Temporal is reachable and a worker polls the task queue",
                    "operationId": "ready",
                    "responses": {
                        "200": _answer("ready", _ref(Health)),
                        **_problems(502, 503),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": _answer("OpenAPI 3.1", {"type": "object"})},
                }
            },
        },
        "components": {"schemas": schemas["$defs"]},
    }
