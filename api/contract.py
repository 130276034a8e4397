"""The HTTP API's contract: the models of its JSON, and the OpenAPI document.

The models validate requests and shape answers. Each route declares its
operation beside it (`@operation`); the OpenAPI 3.1 document served at
/openapi.json is built from the app's routes and those declarations, with
the same models as schemas, so neither a route nor a model can drift from
the document.
"""

import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from flask import Flask
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticCustomError

from shared import MAX_DEADLINE_SECONDS, BookVacationInput, Leg, Outcome, UndoOutcome


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


def _digits(value: object) -> object:
    # A number in a query string is digits alone: no sign, space, "_" or fraction.
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("digits", "must be a whole number, in digits")
    return value


def _matchable(value: str) -> str:
    # Visibility queries match neither, however escaped (tried on Temporal 1.32):
    # refused, so that the quoted value can never be closed (api/bookings.py).
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


class Role(StrEnum):
    """What an API key may do (README, "Access")."""

    CLIENT = "client"
    """Books, and sees, follows, cancels and lists the bookings it made."""
    OPERATOR = "operator"
    """Sees, follows, lists and cancels every booking; books none."""


ANY_ROLE = frozenset(Role)

CLIENTS = frozenset({Role.CLIENT})
"""Who may book: bookings are made by clients, and an operator looks after them."""

SECURITY_SCHEME = "apiKey"
"""The OpenAPI document's name for the bearer scheme, when the API takes keys."""

MODELS: list[type[BaseModel]] = [
    BookingRequest,
    BookingQuery,
    BookingList,
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

HEADERS = {
    "Location": {"description": "the booking's status URL", "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "the scheme to use: Bearer", "schema": {"type": "string"}},
}

PROBLEMS = {
    400: "a field or query parameter is missing or invalid, or the body is not a JSON object",
    401: "no API key, a malformed Authorization header, or an unknown key",
    403: "the key's role may not do this",
    404: "no such booking (for a client's key: none that this client made)",
    409: "the booking has already ended",
    413: "the body is over 16 KiB",
    415: "the body is not sent as application/json",
    422: "the Idempotency-Key was used with another body",
    502: "Temporal refused a call for a reason other than availability",
    503: "Temporal or its workers cannot be reached now",
}
"""When each error status is answered, as the document says it."""

PROBLEM_HEADERS = {401: ("WWW-Authenticate",), 503: ("Retry-After",)}
"""The headers an error status comes with."""

BOOKING_PROBLEMS = (400, 413, 415, 422, 502, 503)
"""What a request that starts a booking may be answered, short of success."""


@dataclass(frozen=True)
class Answer:
    """One documented answer: what it means, its body, its headers."""

    description: str
    schema: type[BaseModel] | tuple[type[BaseModel], ...] | None = None
    headers: tuple[str, ...] = ()

    def to_openapi(self, media: str = JSON) -> dict[str, Any]:
        """Return the OpenAPI response object."""
        answer: dict[str, Any] = {"description": self.description}
        if isinstance(self.schema, tuple):
            answer["content"] = {media: {"schema": {"oneOf": [_ref(m) for m in self.schema]}}}
        elif self.schema is not None:
            answer["content"] = {media: {"schema": _ref(self.schema)}}
        else:
            answer["content"] = {media: {"schema": {"type": "object"}}}
        if self.headers:
            answer["headers"] = {name: HEADERS[name] for name in self.headers}
        return answer


ACCEPTED = Answer("the booking has started; see Location", BookingAccepted, ("Location",))

TRIP = Answer("the trip was booked, or cancelled and undone", (TripBooked, TripCancelled))


@dataclass(frozen=True)
class Operation:
    """What a route does, what it takes and what it answers, for the OpenAPI document."""

    operation_id: str
    summary: str
    answers: Mapping[int, Answer]
    problems: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()
    query: type[BaseModel] | None = None
    roles: frozenset[Role] = ANY_ROLE
    """The roles whose keys may call it, when the API takes keys."""
    public: bool = False
    """Needs no key at all."""

    def to_openapi(
        self, path_parameters: list[str], schemas: Mapping[str, Any], secured: bool = False
    ) -> dict[str, Any]:
        """Return the OpenAPI operation object; `schemas` are the document's components.

        `secured`: the API takes keys, so a call without one is refused.
        """
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_parameters
        ]
        if self.query is not None:
            parameters += query_parameters(schemas[self.query.__name__])
        parameters += self.headers
        document: dict[str, Any] = {"summary": self.summary, "operationId": self.operation_id}
        if parameters:
            document["parameters"] = parameters
        if self.body is not None:
            document["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": _ref(self.body)}},
            }
        responses = {str(status): answer.to_openapi() for status, answer in self.answers.items()}
        problems = self.problems
        if secured and self.public:
            document["security"] = []
        elif secured:
            problems = (401, *((403,) if self.roles != ANY_ROLE else ()), *problems)
        for status in problems:
            sent = PROBLEM_HEADERS.get(status, ())
            responses[str(status)] = Answer(PROBLEMS[status], Problem, sent).to_openapi(PROBLEM)
        document["responses"] = responses
        return document


View = TypeVar("View", bound=Callable[..., Any])

_OPERATIONS: "weakref.WeakKeyDictionary[Callable[..., Any], Operation]" = (
    weakref.WeakKeyDictionary()
)
"""Each declared view's operation (weakly: an app's views go with the app)."""


def operation(
    operation_id: str,
    answers: Mapping[int, Answer],
    *,
    problems: tuple[int, ...] = (),
    body: type[BaseModel] | None = None,
    headers: tuple[dict[str, Any], ...] = (),
    query: type[BaseModel] | None = None,
    roles: frozenset[Role] = ANY_ROLE,
    public: bool = False,
) -> Callable[[View], View]:
    """Declare a view's operation: who may call it, and how the OpenAPI document shows it.

    Its summary is the docstring. Put it under the route decorator: the
    path, its parameters and the method come from the route itself.
    `api/access.py` lets a request through by the same declaration.
    """

    def declare(view: View) -> View:
        summary = (view.__doc__ or operation_id).strip().splitlines()[0].rstrip(".")
        _OPERATIONS[view] = Operation(
            operation_id, summary, answers, problems, body, headers, query, roles, public
        )
        return view

    return declare


def declared(view: Callable[..., Any]) -> Operation | None:
    """Return the operation declared for a view, if any."""
    return _OPERATIONS.get(view)


def openapi_document(app: Flask, secured: bool = False) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every declared route of `app`.

    `secured`: the API takes keys, so the document declares the bearer scheme.
    """
    _, schemas = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        found = declared(app.view_functions[rule.endpoint])
        if found is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <int:n> is {n}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = found.to_openapi(
                sorted(rule.arguments), schemas["$defs"], secured
            )
    components: dict[str, Any] = {"schemas": schemas["$defs"]}
    if secured:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": 'an API key, made with `make api-key` (README, "Access")',
            }
        }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Trip booking saga",
            "version": "1.0.0",
            "description": "Books a car, a hotel and a flight as one saga on Temporal.",
        },
        "paths": paths,
        "components": components,
    }
    if secured:
        document["security"] = [{SECURITY_SCHEME: []}]
    return document


def query_parameters(model_schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return a query model's fields as OpenAPI query parameters.

    A field that may be left out is optional, not nullable: a query string
    has no null.
    """
    required = set(model_schema.get("required", ()))
    parameters = []
    for name, field in model_schema["properties"].items():
        schema = {key: value for key, value in field.items() if key not in ("title", "anyOf")}
        given = [option for option in field.get("anyOf", ()) if option.get("type") != "null"]
        if len(given) == 1:
            schema = given[0] | schema  # the field's own description over its type's
        elif given:
            schema["anyOf"] = given
        if schema.get("default", "") is None:
            del schema["default"]
        description = schema.pop("description", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": schema}
        parameters.append(parameter | ({"description": description} if description else {}))
    return parameters


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}
