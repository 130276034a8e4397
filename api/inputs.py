"""Reading a request: the booking in its body, and its Idempotency-Key."""

from flask import request
from pydantic import ValidationError
from werkzeug.exceptions import UnsupportedMediaType

from api.contract import BookingRequest

MAX_BODY_BYTES = 16 * 1024
"""A booking request is a few hundred bytes; anything far larger is refused."""

FIELD_MESSAGES = {"extra_forbidden": "is not a field of a booking"}
"""Clearer words than pydantic's where its own say too little."""


class InvalidRequest(Exception):
    """The request cannot be a booking; `fields` names each field that is wrong."""

    def __init__(self, detail: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = fields


def read_booking() -> BookingRequest:
    """Parse and validate the request body."""
    if not request.is_json:
        raise UnsupportedMediaType("send the booking as Content-Type: application/json")
    try:
        body = request.get_json()  # malformed JSON: a 400 from Flask, through api.errors
    except RecursionError:  # json's parser recurses per level of nesting
        raise InvalidRequest("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return BookingRequest.model_validate(body)
    except ValidationError as err:
        fields = {
            ".".join(map(str, e["loc"])) or "body": FIELD_MESSAGES.get(e["type"], e["msg"])
            for e in err.errors()
        }
        first = next(iter(fields))
        raise InvalidRequest(f"invalid field '{first}': {fields[first]}", fields) from None


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
