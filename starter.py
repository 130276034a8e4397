"""The HTTP API: `POST /book` runs a booking saga and answers with its outcome.

Views are synchronous; they reach Temporal through the process's one
`TemporalGateway` (one client on one event loop, see `temporal_gateway.py`).
"""

import asyncio
import logging
import secrets
import signal
import sys
import threading
from datetime import timedelta
from typing import Annotated

from flask import Flask, Response, jsonify, request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from werkzeug.exceptions import HTTPException, UnsupportedMediaType
from werkzeug.serving import ThreadedWSGIServer

from config import ApiSettings, ConfigError, temporal_connect_config
from shared import BookingState, BookVacationInput, Leg
from temporal_gateway import TemporalGateway, TemporalUnavailable
from workflows import BookingWorkflow

log = logging.getLogger("starter")

MAX_BODY_BYTES = 16 * 1024
"""A booking request is a few hundred bytes; anything far larger is refused."""

START_RPC_TIMEOUT = timedelta(seconds=5)
"""How long to wait for Temporal to accept a booking before answering 503."""

ID_TRIES = 5
"""New suffixes to try when a user_id is already taken (a 1 in 10^6 clash)."""


def _printable(value: str) -> str:
    # Names and ids end up in workflow ids, logs and the Web UI: no control or
    # format characters (a zero-width space, a right-to-left override).
    if not value.strip() or not value.isprintable():
        raise PydanticCustomError("printable", "must be printable text, not blank")
    return value


Text = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]


FIELD_MESSAGES = {"extra_forbidden": "is not a field of a booking"}
"""Clearer words than pydantic's where its own say too little."""


class BookingRequest(BaseModel):
    """The body of `POST /book`, as the tutorial sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text
    attempts: Annotated[int, Field(ge=1, le=10)]
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


class BadRequestBody(Exception):
    """The body is not a JSON object, so no field can be read from it."""


def generate_unique_username(name: str) -> str:
    """Return the booking id: `John Doe` becomes `john-doe-` and six digits."""
    return f"{'-'.join(name.lower().split())}-{secrets.randbelow(10**6):06d}"


async def book_trip(
    client: Client, booking: BookingRequest, task_queue: str, wait: timedelta
) -> tuple[str, BookingState | None]:
    """Start the saga under a fresh user_id; return it with the result, if ready in time.

    Once the booking has started, no failure may reach the client as "try
    again": a retry would book a second trip. A result that is late, or that
    Temporal cannot deliver just now, comes back as None with the user_id.
    """
    handle = await start_booking(client, booking, task_queue)
    try:
        return handle.id, await asyncio.wait_for(handle.result(), wait.total_seconds())
    except (TimeoutError, RPCError) as err:
        log.info("Booking %s still running or unreachable (%r): answering 202", handle.id, err)
        return handle.id, None


async def start_booking(
    client: Client, booking: BookingRequest, task_queue: str
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    """Start the saga under a user_id no other booking has had."""
    for _ in range(ID_TRIES):
        user_id = generate_unique_username(booking.name)
        try:
            return await client.start_workflow(
                BookingWorkflow.run,
                booking.to_input(user_id),
                id=user_id,
                task_queue=task_queue,
                # A user_id names one booking for as long as Temporal keeps it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=START_RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            continue
    raise RuntimeError(f"no free user_id for {booking.name!r} after {ID_TRIES} tries")


def booking_response(state: BookingState) -> dict[str, object]:
    """Return the tutorial's JSON for a finished booking, plus the details."""
    if state.cancelled:
        return {
            "user_id": state.user_id,
            "cancelled": True,
            "result": "Voyage cancelled",
            "reason": state.reason,
            "failed_step": state.failed_leg,
            "compensations": [
                {"step": c.leg, "outcome": c.outcome} | ({"error": c.error} if c.error else {})
                for c in state.compensations
            ],
        }
    items = {leg: state.leg(leg).item_id for leg in Leg}
    return {
        "user_id": state.user_id,
        "cancelled": False,
        **{leg.value: f"{leg.capitalize()}: {item}" for leg, item in items.items()},
        "result": " ".join(f"Booked {leg}: {item}" for leg, item in items.items()),
    }


def still_running(user_id: str) -> dict[str, object]:
    """Return the answer for a booking that has started but not yet ended."""
    return {
        "user_id": user_id,
        "status": "in progress",
        "detail": "the booking has started and is still running; "
        "find it in the Temporal Web UI under its user_id",
    }


def read_booking() -> BookingRequest:
    """Parse and validate the request body."""
    if not request.is_json:
        raise UnsupportedMediaType("send the booking as Content-Type: application/json")
    body = request.get_json()  # malformed JSON: a 400 from Flask, through http_error
    if not isinstance(body, dict):
        raise BadRequestBody("the body must be a JSON object")
    return BookingRequest.model_validate(body)


def create_app(temporal: TemporalGateway, settings: ApiSettings | None = None) -> Flask:
    """Build the API around a process-wide Temporal gateway."""
    settings = settings or ApiSettings()
    wait = timedelta(seconds=settings.book_wait_seconds)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    register_error_handlers(app)

    @app.post("/book")
    def book_vacation() -> Response | tuple[Response, int]:
        """Book a trip and answer with what was booked or why it was cancelled."""
        booking = read_booking()
        user_id, state = temporal.call(
            lambda client: book_trip(client, booking, settings.task_queue, wait)
        )
        if state is None:
            return jsonify(still_running(user_id)), 202
        return jsonify(booking_response(state))

    return app


UNREACHABLE = "Temporal is unreachable; try again shortly"
RETRY_AFTER = {"Retry-After": "5"}
TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}
"""RPC failures that say "not now" rather than "no": worth a retry later."""


def register_error_handlers(app: Flask) -> None:
    """Map every failure to a JSON answer; no traceback reaches a client."""

    def error(
        status: int, message: str, headers: dict[str, str] | None = None, **extra: object
    ) -> tuple[Response, int]:
        response = jsonify({"error": message, **extra})
        response.headers.update(headers or {})
        return response, status

    @app.errorhandler(ValidationError)
    def invalid_field(err: ValidationError) -> tuple[Response, int]:
        fields = {
            ".".join(map(str, e["loc"])) or "body": FIELD_MESSAGES.get(e["type"], e["msg"])
            for e in err.errors()
        }
        first = next(iter(fields))
        return error(400, f"invalid field '{first}': {fields[first]}", fields=fields)

    @app.errorhandler(BadRequestBody)
    def bad_body(err: BadRequestBody) -> tuple[Response, int]:
        return error(400, str(err))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        extra = dict(err.get_headers()[1:])  # keeps Allow on a 405
        return error(err.code or 500, err.description or err.name, extra)

    @app.errorhandler(TemporalUnavailable)
    def temporal_down(err: TemporalUnavailable) -> tuple[Response, int]:
        log.warning("Cannot connect to Temporal: %s", err)
        return error(503, UNREACHABLE, RETRY_AFTER)

    @app.errorhandler(RPCError)
    def temporal_refused(err: RPCError) -> tuple[Response, int]:
        log.warning("Temporal call failed: %s (%s)", err.message, err.status.name)
        if err.status in TRANSIENT:
            return error(503, UNREACHABLE, RETRY_AFTER)
        return error(502, f"Temporal refused the booking: {err.message}")

    @app.errorhandler(WorkflowFailureError)
    def workflow_failed(err: WorkflowFailureError) -> tuple[Response, int]:
        log.error("Booking workflow failed: %s", err.cause)
        return error(502, "the booking workflow failed; see the Temporal Web UI")

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> tuple[Response, int]:
        log.exception("Unhandled error")
        return error(500, "internal error")


def serve(app: Flask, settings: ApiSettings) -> None:
    """Serve until SIGINT or SIGTERM, then finish the requests in flight."""
    server = ThreadedWSGIServer(settings.host, settings.port, app)
    server.daemon_threads = False  # so server_close() waits for open requests

    def stop(signum: int, frame: object) -> None:
        log.info("Stopping the API")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    log.info("API listening on http://%s:%s", settings.host, server.server_port)
    server.serve_forever()
    server.server_close()


def main() -> None:
    """Connect to Temporal and serve the API."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ApiSettings.from_env()
    config = temporal_connect_config()
    temporal = TemporalGateway.start(lambda: Client.connect(**config))
    try:
        serve(create_app(temporal, settings), settings)
    finally:
        temporal.close()
    log.info("API stopped")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"starter: {err}")
