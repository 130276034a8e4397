"""The one place where failures become answers: RFC 9457 problem details.

Domain errors (`api.temporal`, `api.inputs`, `api.access`), HTTP errors and the SDK's own
errors each map to one status here; no traceback reaches a client.
"""

import logging
from http import HTTPStatus

from flask import Blueprint, Response, request
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError
from werkzeug.exceptions import BadRequest, HTTPException

from api.access import AccessError, Unauthenticated
from api.breaker import unreachable
from api.contract import PROBLEM
from api.inputs import InvalidRequest
from api.loop import Busy
from api.models import Problem
from api.presenters import send
from api.temporal import (
    TRANSIENT,
    UNREACHABLE,
    BookingEnded,
    BookingError,
    BookingNotFound,
    BookingsStuck,
    DecisionRefused,
    KeyReused,
    PageTokenRefused,
    Unavailable,
)

log = logging.getLogger("api.errors")

blueprint = Blueprint("errors", __name__)

STATUS: dict[type[BookingError], HTTPStatus] = {
    BookingNotFound: HTTPStatus.NOT_FOUND,
    BookingEnded: HTTPStatus.CONFLICT,
    DecisionRefused: HTTPStatus.CONFLICT,
    KeyReused: HTTPStatus.UNPROCESSABLE_ENTITY,
    PageTokenRefused: HTTPStatus.BAD_REQUEST,
    Unavailable: HTTPStatus.SERVICE_UNAVAILABLE,
    BookingsStuck: HTTPStatus.SERVICE_UNAVAILABLE,
}

RETRY_AFTER = {"Retry-After": "5"}
"""Sent with every 503: when to ask again."""


def problem(
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    fields: dict[str, str] | None = None,
    user_id: str | None = None,
    stuck: int | None = None,
) -> Response:
    """Return an RFC 9457 problem details answer: the one shape of every error."""
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.path,
        fields=fields,
        user_id=user_id,
        stuck=stuck,
    )
    response = send(body)
    response.status_code = status
    response.mimetype = PROBLEM
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        response.headers.update(RETRY_AFTER)
    response.headers.update(headers or {})
    return response


@blueprint.app_errorhandler(BookingError)
def booking_error(err: BookingError) -> Response:
    """Answer a booking operation that cannot be done."""
    if isinstance(err, Unavailable) and (cause := err.__cause__) is not None:
        # One answered at once while the breaker is open has no cause: the
        # breaker logs the outage once, not once a request.
        what = "Temporal unreachable" if unreachable(cause) else "Temporal"
        log.warning("%s: %s (%s)", what, cause, err.detail)
    status = STATUS.get(type(err), HTTPStatus.INTERNAL_SERVER_ERROR)
    stuck = err.count if isinstance(err, BookingsStuck) else None
    return problem(status, err.detail, user_id=err.user_id, stuck=stuck)


@blueprint.app_errorhandler(AccessError)
def refused(err: AccessError) -> Response:
    """Answer a request without a known key (401, with the scheme to use) or its role's right."""
    # The path as a repr: a decoded %0A in it must not forge a log line.
    log.info("Refused %s %r: %s", request.method, request.path, err.detail)
    if isinstance(err, Unauthenticated):
        return problem(HTTPStatus.UNAUTHORIZED, err.detail, {"WWW-Authenticate": err.challenge})
    return problem(HTTPStatus.FORBIDDEN, err.detail)


@blueprint.app_errorhandler(InvalidRequest)
def invalid_request(err: InvalidRequest) -> Response:
    """Answer a request that cannot be a booking: 400, naming each field."""
    return problem(HTTPStatus.BAD_REQUEST, err.detail, fields=err.fields)


@blueprint.app_errorhandler(HTTPException)
def http_error(err: HTTPException) -> Response:
    """Answer Flask's own: no such path, wrong method, body too large, not JSON."""
    headers = dict(err.get_headers()[1:])  # keeps Allow on a 405
    detail = err.description or err.name
    if isinstance(err, BadRequest):
        detail = "the body is not valid JSON"
    return problem(err.code or 500, detail, headers)


@blueprint.app_errorhandler(Busy)
def busy(err: Busy) -> Response:
    """Answer a request beyond what may wait on Temporal at once: ask again shortly."""
    log.warning("Refusing a request: %s", err)
    return problem(HTTPStatus.SERVICE_UNAVAILABLE, "the API is at capacity; try again shortly")


@blueprint.app_errorhandler(TimeoutError)
def no_answer(err: TimeoutError) -> Response:
    """Answer a request that outlived its deadline on the client's loop."""
    log.warning("No answer from Temporal in time: %s", err)
    return problem(HTTPStatus.SERVICE_UNAVAILABLE, UNREACHABLE)


@blueprint.app_errorhandler(RPCError)
def temporal_refused(err: RPCError) -> Response:
    """Answer a call Temporal did not take: "not now" (503) or "no" (502)."""
    log.warning("Temporal call failed: %s (%s)", err.message, err.status.name)
    if err.status in TRANSIENT:
        return problem(HTTPStatus.SERVICE_UNAVAILABLE, UNREACHABLE)
    return problem(HTTPStatus.BAD_GATEWAY, f"Temporal refused the call: {err.message}")


@blueprint.app_errorhandler(WorkflowFailureError)
def workflow_failed(err: WorkflowFailureError) -> Response:
    """Answer a booking whose workflow failed instead of returning a result."""
    log.error("Booking workflow failed: %s", err.cause)
    return problem(HTTPStatus.BAD_GATEWAY, "the booking workflow failed; see the Temporal Web UI")


@blueprint.app_errorhandler(Exception)
def unexpected(err: Exception) -> Response:
    """Answer anything else: logged with its traceback, answered without it."""
    log.exception("Unhandled error")
    return problem(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
