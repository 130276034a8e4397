"""The routes beyond the tutorial's `POST /book`: follow, cancel, list, health, contract."""

from typing import cast

from flask import Blueprint, Response, current_app, jsonify

from api.access import current_caller, keys_in_force
from api.contract import (
    ACCEPTED,
    BOOKING_PROBLEMS,
    CLIENTS,
    IDEMPOTENCY_KEY,
    Answer,
    openapi_document,
    operation,
)
from api.following import Following
from api.inputs import idempotency_key, page_token, read_booking, read_listing
from api.models import (
    BookingAccepted,
    BookingList,
    BookingQuery,
    BookingRequest,
    BookingView,
    Health,
)
from api.presenters import accepted, ended_view, listing_view, send, status_view
from api.starting import Starting
from shared import BookingState

blueprint = Blueprint("bookings", __name__)


def starting() -> Starting:
    """Return the app's starts of bookings (`create_app` puts them there)."""
    return cast(Starting, current_app.extensions["starting"])


def following() -> Following:
    """Return the app's following of bookings (`create_app` puts them there)."""
    return cast(Following, current_app.extensions["following"])


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
        return send(status_view(found))
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
