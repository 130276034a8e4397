"""Reading a request: the booking in its body, its Idempotency-Key, a listing's query."""

import base64
import binascii
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import NotFound, UnsupportedMediaType

from api.models import BookingQuery, BookingRequest, ResolveRequest
from shared import Leg

MAX_BODY_BYTES = 16 * 1024
"""A booking request is a few hundred bytes; anything far larger is refused."""

FIELD_MESSAGES = {"extra_forbidden": "is not a field of a booking"}
"""Clearer words than pydantic's where its own say too little."""

PARAMETER_MESSAGES = {"extra_forbidden": "is not a parameter of this list"}

NOTE_MESSAGES = {"extra_forbidden": "is not a field of a resolution: send the note alone"}

M = TypeVar("M", bound=BaseModel)


class InvalidRequest(Exception):
    """The request cannot be a booking; `fields` names each field that is wrong."""

    def __init__(self, detail: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields


def read_booking() -> BookingRequest:
    """Parse and validate the request body."""
    return validated(BookingRequest, json_object("the booking"), "field", FIELD_MESSAGES)


def read_resolution() -> ResolveRequest:
    """Parse and validate the body of a leg's resolution."""
    return validated(ResolveRequest, json_object("the note"), "field", NOTE_MESSAGES)


def json_object(what: str) -> dict[str, Any]:
    """Return the request's body, a JSON object; or say why it is not one."""
    if not request.is_json:
        raise UnsupportedMediaType(f"send {what} as Content-Type: application/json")
    try:
        body = request.get_json()  # malformed JSON: a 400 from Flask, through api.errors
    except RecursionError:  # json's parser recurses per level of nesting
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def read_leg(name: str) -> Leg:
    """Return the leg a path names; 404 if a booking has no such leg."""
    try:
        return Leg(name)
    except ValueError:
        raise NotFound(f"no leg {name!r}: a booking's legs are car, hotel and flight") from None


def read_listing() -> BookingQuery:
    """Parse and validate the query string of `GET /bookings`."""
    given = request.args.to_dict(flat=False)
    for name, values in given.items():
        if len(values) > 1:
            message = "is given more than once"
            raise InvalidRequest(f"invalid parameter '{name}': {message}", {name: message})
    query = {name: values[0] for name, values in given.items()}
    return validated(BookingQuery, query, "parameter", PARAMETER_MESSAGES)


def page_token(query: BookingQuery) -> bytes | None:
    """Return Temporal's page token that the query's `page_token` carries, if any.

    `presenters.listing_view` makes it: Temporal's own token, base64url-encoded.
    """
    if query.page_token is None:
        return None
    try:
        return base64.urlsafe_b64decode(query.page_token + "=" * (-len(query.page_token) % 4))
    except (binascii.Error, ValueError):
        message = "cannot be read: start again from the first page"
        raise InvalidRequest(
            f"invalid parameter 'page_token': {message}", {"page_token": message}
        ) from None


def validated(model: type[M], data: dict[str, Any], what: str, messages: dict[str, str]) -> M:
    """Return `data` as `model`, or raise `InvalidRequest` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        fields = {
            ".".join(map(str, e["loc"])) or "body": messages.get(e["type"], e["msg"])
            for e in err.errors()
        }
        first = next(iter(fields))
        raise InvalidRequest(f"invalid {what} '{first}': {fields[first]}", fields) from None


def idempotency_key() -> str | None:
    """Return the request's Idempotency-Key, if any (a quoted sf-string is unquoted)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= 255 or not all("!" <= c <= "~" for c in key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key
