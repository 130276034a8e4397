"""The HTTP API's contract: each route's declared operation, and the OpenAPI document.

Each route declares its operation beside it (`@operation`); the OpenAPI 3.1
document served at /openapi.json is built from the app's routes and those
declarations, with the models of `api/models.py` as schemas, so neither a
route nor a model can drift from the document.
"""

import re
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.models import (
    BookingAccepted,
    BookingList,
    BookingQuery,
    BookingRequest,
    BookingView,
    Decided,
    Health,
    Problem,
    ResolveRequest,
    TripBooked,
    TripCancelled,
)


class Role(StrEnum):
    """What an API key may do (docs/access.md)."""

    CLIENT = "client"
    """Books, and sees, follows, cancels and lists the bookings it made."""
    OPERATOR = "operator"
    """Sees, follows, lists and cancels every booking; books none."""


ANY_ROLE = frozenset(Role)

CLIENTS = frozenset({Role.CLIENT})
"""Who may book: bookings are made by clients, and an operator looks after them."""

OPERATORS = frozenset({Role.OPERATOR})
"""Who may decide what becomes of a leg whose undo keeps failing: a person looking after them."""

SECURITY_SCHEME = "apiKey"
"""The OpenAPI document's name for the bearer scheme, when the API takes keys."""

MODELS: list[type[BaseModel]] = [
    BookingRequest,
    BookingQuery,
    BookingList,
    TripBooked,
    TripCancelled,
    BookingView,
    BookingAccepted,
    ResolveRequest,
    Decided,
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
    "Trace-Id": {
        "description": "the OpenTelemetry trace the booking runs in, where its worker traces",
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    },
}

PROBLEMS = {
    400: "a field or query parameter is missing or invalid, or the body is not a JSON object",
    401: "no API key, a malformed Authorization header, or an unknown key",
    403: "the key's role may not do this",
    404: "no such booking (for a client's key: none that this client made; on a leg's "
    "decision, any), or no such leg",
    409: "the booking has already ended, or the saga refused the decision (its reason in detail)",
    413: "the body is over 16 KiB",
    415: "the body is not sent as application/json",
    422: "the Idempotency-Key was used with another body",
    502: "Temporal refused a call for a reason other than availability",
    503: "Temporal or its workers cannot be reached now, or the namespace lacks the saga's "
    "search attributes",
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

DECIDED = Answer("what the decision did to the leg", Decided)

STILL_RUNNING = Answer(
    "the retried undo still runs: follow the booking at Location", BookingAccepted, ("Location",)
)

TRIP = Answer(
    "the trip was booked, or cancelled and undone", (TripBooked, TripCancelled), ("Trace-Id",)
)


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
            # A client refused a route about one booking is told it was not found
            # (`api.access.admit`): a 403 is left for the other roles refused.
            hidden = {Role.CLIENT} if "user_id" in path_parameters else set()
            problems = (401, *((403,) if ANY_ROLE - self.roles - hidden else ()), *problems)
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
                "description": "an API key, made with `make api-key` (docs/access.md)",
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
