"""The routes beyond the tutorial's `POST /book`: follow, cancel, list, health, contract."""

from typing import cast

from flask import Blueprint, Response, current_app, jsonify

from api.access import current_caller, keys_in_force
from api.contract import (
    ACCEPTED,
    BOOKING_PROBLEMS,
    CLIENTS,
    DECIDED,
    IDEMPOTENCY_KEY,
    OPERATORS,
    STILL_RUNNING,
    Answer,
    Role,
    openapi_document,
    operation,
)
from api.deciding import Deciding
from api.following import Following
from api.inputs import (
    idempotency_key,
    page_token,
    read_booking,
    read_leg,
    read_listing,
    read_resolution,
)
from api.models import (
    BookingAccepted,
    BookingList,
    BookingQuery,
    BookingRequest,
    BookingView,
    Health,
    ResolveRequest,
)
from api.presenters import (
    accepted,
    decision_answer,
    ended_view,
    listing_view,
    send,
    status_view,
)
from api.starting import Starting
from shared import BookingState

blueprint = Blueprint("bookings", __name__)


def starting() -> Starting:
    """Return the app's starts of bookings (`create_app` puts them there)."""
    return cast(Starting, current_app.extensions["starting"])


def following() -> Following:
    """Return the app's following of bookings (`create_app` puts them there)."""
    return cast(Following, current_app.extensions["following"])


def deciding() -> Deciding:
    """Return the app's decisions on legs (`create_app` puts them there)."""
    return cast(Deciding, current_app.extensions["deciding"])


@blueprint.post("/bookings")
@operation(
    "startBooking",
    {202: ACCEPTED},
    problems=BOOKING_PROBLEMS,
    body=BookingRequest,
    headers=(IDEMPOTENCY_KEY,),
    roles=CLIENTS,
)
async def start_booking() -> tuple[Response, int, dict[str, str]]:
    """Start a booking and answer at once."""
    booking, key = read_booking(), idempotency_key()
    handle = await starting().start(booking, key, current_caller())
    return accepted(handle.id)


@blueprint.get("/bookings")
@operation(
    "listBookings",
    {200: Answer("a page of bookings: running ones, then ended ones, newest first", BookingList)},
    problems=(400, 502, 503),
    query=BookingQuery,
)
async def list_bookings() -> Response:
    """List bookings by status or customer, a page at a time, newest first."""
    query = read_listing()
    page = await following().list_bookings(
        query.status, query.customer, query.page_size, page_token(query), current_caller()
    )
    return send(listing_view(page))


@blueprint.get("/bookings/<user_id>")
@operation("getBooking", {200: Answer("the booking", BookingView)}, problems=(404, 502, 503))
async def get_booking(user_id: str) -> Response:
    """Show a booking's legs while it runs, and its result once done."""
    found = await following().status(user_id, current_caller())
    if isinstance(found, BookingState):
        return send(status_view(found, may_decide=current_caller().role is not Role.CLIENT))
    return send(ended_view(user_id, found))


@blueprint.post("/bookings/<user_id>/cancel")
@operation(
    "cancelBooking",
    {202: Answer("cancellation requested", BookingAccepted, ("Location",))},
    problems=(404, 409, 502, 503),
)
async def cancel_booking(user_id: str) -> tuple[Response, int, dict[str, str]]:
    """Cancel a running booking: its registered undos run."""
    return accepted(await following().cancel(user_id, current_caller()))


Decision = Response | tuple[Response, int, dict[str, str]]


@blueprint.post("/bookings/<user_id>/legs/<leg>/retry-undo")
@operation(
    "retryUndo",
    {200: DECIDED, 202: STILL_RUNNING},
    problems=(404, 409, 502, 503),
    roles=OPERATORS,
)
async def retry_undo(user_id: str, leg: str) -> Decision:
    """Run again the undo of a leg that needs attention, with a fresh set of attempts."""
    decided = await deciding().retry_undo(user_id, read_leg(leg), current_caller())
    return decision_answer(user_id, decided)


@blueprint.post("/bookings/<user_id>/legs/<leg>/resolve")
@operation(
    "resolveLeg",
    {200: DECIDED, 202: STILL_RUNNING},
    problems=(400, 404, 409, 413, 415, 502, 503),
    body=ResolveRequest,
    roles=OPERATORS,
)
async def resolve(user_id: str, leg: str) -> Decision:
    """Record that a leg that needs attention was released by other means, with a note."""
    to_resolve, note = read_leg(leg), read_resolution().note
    decided = await deciding().resolve(user_id, to_resolve, note, current_caller())
    return decision_answer(user_id, decided)


@blueprint.get("/healthz")
@operation("health", {200: Answer("alive", Health)}, public=True)
def healthz() -> Response:
    """Answer while the API process is alive."""
    return send(Health(status="ok"))


@blueprint.get("/readyz")
@operation("ready", {200: Answer("ready", Health)}, problems=(502, 503), public=True)
async def readyz() -> Response:
    """Answer when Temporal is reachable, a worker polls the task queue, and no booking is stuck."""
    workers = await following().workers()
    # Public: with API keys, another client's booking is never named to anyone.
    await following().check_nothing_stuck(name_them=not keys_in_force())
    return send(Health(status="ready", workers=workers))


@blueprint.get("/openapi.json")
@operation("openapi", {200: Answer("OpenAPI 3.1")}, public=True)
def openapi() -> Response:
    """Serve the OpenAPI document."""
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = openapi_document(current_app, keys_in_force())
    return jsonify(current_app.extensions["openapi"])
