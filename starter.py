"""The HTTP API: `POST /book` runs a booking saga and answers with its outcome.

The Temporal client is bound to the event loop it was created on and is not
safe to share between loops (sdk-python #147), while Flask serves each request
on a thread of its own. So the process owns one client on one loop, in one
background thread, and every request reaches Temporal through that loop.
"""

import asyncio
import logging
import secrets
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any, Self, TypeVar

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from werkzeug.exceptions import HTTPException, UnsupportedMediaType
from werkzeug.serving import ThreadedWSGIServer

from config import ApiSettings, ConfigError, temporal_connect_config
from shared import TASK_QUEUE_NAME, BookingState, BookVacationInput, Leg
from workflows import BookingWorkflow

log = logging.getLogger("starter")

T = TypeVar("T")

MAX_BODY_BYTES = 16 * 1024
"""A booking request is a few hundred bytes; anything far larger is refused."""

START_RPC_TIMEOUT = timedelta(seconds=5)
"""How long to wait for Temporal to accept a booking before answering 503."""

ID_TRIES = 5
"""New suffixes to try when a user_id is already taken (a 1 in 10^6 clash)."""

_PRINTABLE = r"[^\x00-\x1f\x7f-\x9f]"
Text = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        # Printable throughout, and not blank: ids end up in logs and the Web UI.
        pattern=rf"^{_PRINTABLE}*[^\s\x00-\x1f\x7f-\x9f]{_PRINTABLE}*$",
    ),
]


FIELD_MESSAGES = {
    "string_pattern_mismatch": "must be printable text, not blank",
    "extra_forbidden": "is not a field of a booking",
}
"""Clearer words than pydantic's for the errors whose default names internals."""


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


class TemporalGateway:
    """One Temporal client on one event loop thread, callable from any thread."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self._client = client
        self._loop = loop
        self._thread = thread

    @classmethod
    def start(cls, connect: Callable[[], Awaitable[Client]]) -> Self:
        """Start the loop thread and connect the client on it."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="temporal-loop", daemon=True)
        thread.start()

        async def connect_on_loop() -> Client:
            return await connect()

        client = asyncio.run_coroutine_threadsafe(connect_on_loop(), loop).result()
        return cls(client, loop, thread)

    def call(self, fn: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        """Run `fn(client)` on the client's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(self._client), self._loop).result()

    def close(self) -> None:
        """Stop the loop thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


def generate_unique_username(name: str) -> str:
    """Return the booking id: `John Doe` becomes `john-doe-` and six digits."""
    return f"{'-'.join(name.lower().split())}-{secrets.randbelow(10**6):06d}"


async def book_trip(client: Client, booking: BookingRequest) -> BookingState:
    """Start the saga under a fresh user_id and wait for its result."""
    for _ in range(ID_TRIES):
        user_id = generate_unique_username(booking.name)
        try:
            handle = await client.start_workflow(
                BookingWorkflow.run,
                booking.to_input(user_id),
                id=user_id,
                task_queue=TASK_QUEUE_NAME,
                # A user_id names one booking for as long as Temporal keeps it.
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=START_RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            continue
        return await handle.result()
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


def read_booking() -> BookingRequest:
    """Parse and validate the request body."""
    if not request.is_json:
        raise UnsupportedMediaType("send the booking as Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequestBody("the body must be a JSON object")
    return BookingRequest.model_validate(body)


def create_app(temporal: TemporalGateway) -> Flask:
    """Build the API around a process-wide Temporal gateway."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    register_error_handlers(app)

    @app.post("/book")
    def book_vacation() -> Response:
        """Book a trip and answer with what was booked or why it was cancelled."""
        booking = read_booking()
        state = temporal.call(lambda client: book_trip(client, booking))
        return jsonify(booking_response(state))

    return app


def register_error_handlers(app: Flask) -> None:
    """Map every failure to a JSON answer; no traceback reaches a client."""

    def error(status: int, message: str, **extra: object) -> tuple[Response, int]:
        return jsonify({"error": message, **extra}), status

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
        response, status = error(err.code or 500, err.description or err.name)
        response.headers.update(err.get_headers()[1:])  # keeps Allow on a 405
        return response, status

    @app.errorhandler(RPCError)
    def temporal_unreachable(err: RPCError) -> tuple[Response, int]:
        log.warning("Temporal call failed: %s", err)
        return error(503, "Temporal is unreachable; try again shortly")

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
    # Lazy: the API starts while Temporal is down and answers 503 meanwhile.
    temporal = TemporalGateway.start(lambda: Client.connect(**config, lazy=True))
    try:
        serve(create_app(temporal), settings)
    finally:
        temporal.close()
    log.info("API stopped")


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"starter: {err}")
