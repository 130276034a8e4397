"""The HTTP API: book a trip as a saga with `POST /book`, as the tutorial does.

`create_app(temporal_client, ...)` builds the Flask app around the process's
one Temporal client. `POST /book` is the tutorial's `async def
book_vacation()`: it starts the saga and awaits its outcome (up to
`BOOK_WAIT_SECONDS`, then 202). The other routes (`api/routes.py`) follow
and cancel bookings. Every async view runs on the event loop that owns the
client (`api/loop.py`); `main()` serves the app with gunicorn.
"""

import logging
import re
import secrets
import sys
from datetime import timedelta

from flask import Flask, Response
from temporalio.client import Client

from api import errors, routes
from api.access import access_summary, current_caller, guard
from api.breaker import Breaker
from api.contract import ACCEPTED, BOOKING_PROBLEMS, CLIENTS, IDEMPOTENCY_KEY, TRIP, operation
from api.deciding import Deciding
from api.following import Following
from api.inputs import MAX_BODY_BYTES, idempotency_key, read_booking
from api.loop import ClientLoop, ClientLoopFlask
from api.metrics import count_requests
from api.models import BookingRequest
from api.presenters import accepted, trip_answer
from api.serving import Server
from api.settings import ApiSettings
from api.starting import Starting
from config import ConfigError, temporal_connect_config
from tracing.instrument import temporal_plugins, trace_flask
from tracing.provider import check_tracing, start_tracing


def generate_unique_username(name: str) -> str:
    """Return the booking id: `John Doe` becomes `john-doe-` and six digits.

    Anything but letters and digits becomes a hyphen, so the id is safe in a
    URL path (a `/` in a name would otherwise make a status URL that 404s).
    """
    slug = re.sub(r"[\W_]+", "-", name.lower()).strip("-") or "trip"
    return f"{slug}-{secrets.randbelow(10**6):06d}"


def create_app(
    temporal_client: Client, client_loop: ClientLoop, settings: ApiSettings | None = None
) -> Flask:
    """Build the API around the process's Temporal client, as the tutorial does.

    Unlike the tutorial's, it is also given the loop the client lives on:
    the app runs its async views there (`api/loop.py`).
    """
    settings = settings or ApiSettings()
    wait = timedelta(seconds=settings.book_wait_seconds)
    # No static folder: every route is one of ours, declared (api/access.py).
    app = ClientLoopFlask(
        __name__, client_loop, max_waiting=settings.max_waiting, static_folder=None
    )
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["ASYNC_VIEW_TIMEOUT"] = settings.request_timeout
    app.json.sort_keys = True  # type: ignore[attr-defined]
    breaker = Breaker.for_client(temporal_client)
    starting = Starting(
        temporal_client,
        settings.task_queue,
        breaker,
        generate_unique_username,
        settings.booking_deadline_seconds,
    )
    app.extensions["starting"] = starting
    app.extensions["following"] = Following(
        temporal_client, settings.task_queue, breaker, settings.deployment_name
    )
    app.extensions["deciding"] = Deciding(temporal_client, settings.task_queue, breaker)
    app.register_blueprint(routes.blueprint)
    app.register_blueprint(errors.blueprint)
    count_requests(app)  # at /metrics, summed over every process of the server
    guard(app, settings.api_keys)  # who may call each route (refusals counted too)

    @app.post("/book")
    @operation(
        "bookTrip",
        {200: TRIP, 202: ACCEPTED},
        problems=BOOKING_PROBLEMS,
        body=BookingRequest,
        headers=(IDEMPOTENCY_KEY,),
        roles=CLIENTS,
    )
    async def book_vacation() -> Response | tuple[Response, int, dict[str, str]]:
        """Book a trip and wait for the outcome (up to BOOK_WAIT_SECONDS)."""
        booking, key = read_booking(), idempotency_key()
        handle = await starting.start(booking, key, current_caller())
        result = await starting.result(handle, wait)
        return trip_answer(result) if result is not None else accepted(handle.id)

    return app


def connected_app(settings: ApiSettings) -> Flask:
    """Start the client's loop, connect the client on it, and build the app.

    The client connects lazily, on its first call: the API starts, and
    answers 503, while Temporal is down, and carries on once it is back.
    Where `OTEL_*` asks for traces, each request gets a span, and the
    bookings it starts continue its trace (docs/tracing.md).
    """
    tracing = start_tracing("trip-booking-api")  # here, after gunicorn's fork
    client_loop = ClientLoop.start()
    plugins = temporal_plugins(tracing)
    connect = Client.connect(**temporal_connect_config(), lazy=True, plugins=plugins)
    app = create_app(client_loop.run(connect), client_loop, settings)
    if tracing:
        trace_flask(app)
    return app


def main() -> None:
    """Serve the API with gunicorn (never Flask's debug server: see the README)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ApiSettings.from_env()
    check_tracing()  # a setting it cannot use is said here, not by each process of the server
    # Open is a warning even on loopback: a reverse proxy there would open it to its callers.
    level = logging.INFO if settings.api_keys is not None else logging.WARNING
    logging.getLogger("starter").log(level, access_summary(settings.api_keys, settings.host))
    Server(settings, connected_app).run()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"starter: {err}")
