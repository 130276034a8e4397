"""The HTTP API: book trips as sagas, follow them, cancel them.

`POST /book` is the tutorial's call: it waits for the saga's outcome (up to
`BOOK_WAIT_SECONDS`). `POST /bookings` answers at once with where to follow
the booking; `GET /bookings/<id>` shows it; `POST /bookings/<id>/cancel`
cancels it. Views are synchronous and reach Temporal through the process's
one `TemporalGateway`. Served by gunicorn (threads), the gateway being made
in each worker process after the fork.
"""

import asyncio
import hashlib
import json
import logging
import re
import secrets
import signal
import sys
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

from flask import Flask, Response, jsonify, request, url_for
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics
from pydantic import BaseModel, ValidationError
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from werkzeug.exceptions import BadRequest, HTTPException, NotFound, UnsupportedMediaType

from config import ApiSettings, ConfigError, temporal_connect_config
from contract import (
    PROBLEM,
    BookingAccepted,
    BookingRequest,
    BookingStatus,
    Health,
    LegView,
    Problem,
    StatusName,
    TripBooked,
    TripCancelled,
    TripResult,
    UndoDone,
    openapi_document,
)
from shared import BookingState, Leg, Outcome
from temporal_gateway import TemporalGateway, TemporalUnavailable
from workflows import BookingWorkflow

if TYPE_CHECKING:
    from gunicorn._types import _WSGIAppType

log = logging.getLogger("starter")

MAX_BODY_BYTES = 16 * 1024
"""A booking request is a few hundred bytes; anything far larger is refused."""

START_RPC_TIMEOUT = timedelta(seconds=5)
"""How long to wait for Temporal to accept a booking before answering 503."""

QUERY_TIMEOUT = timedelta(seconds=5)
"""How long a worker may take to answer the progress query."""

RPC_TIMEOUT = timedelta(seconds=10)
"""Any other single call to Temporal."""

ENDED_WITHOUT_RESULT: dict[WorkflowExecutionStatus | None, StatusName] = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.CANCELED: "cancelled",
}
"""How a booking that ended without a result shows; anything else is "failed"."""

ID_TRIES = 5
"""New suffixes to try when a user_id is already taken (a 1 in 10^6 clash)."""

POLLER_FRESHNESS = timedelta(minutes=2)
"""A worker seen polling this recently counts as ready (its polls last up to a minute)."""

RETRY_AFTER = {"Retry-After": "5"}

UNREACHABLE = "Temporal is unreachable; try again shortly"

FIELD_MESSAGES = {"extra_forbidden": "is not a field of a booking"}
"""Clearer words than pydantic's where its own say too little."""

FINAL = {Outcome.CONFIRMED, Outcome.CANCELLED}

TRANSIENT = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
}
"""RPC failures that say "not now" rather than "no": worth a retry later."""


class ApiProblem(Exception):
    """An answer other than success, as RFC 9457 problem details."""

    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


# --- Temporal operations, run on the gateway's loop --------------------------------


def generate_unique_username(name: str) -> str:
    """Return the booking id: `John Doe` becomes `john-doe-` and six digits.

    Anything but letters and digits becomes a hyphen, so the id is safe in a
    URL path (a `/` in a name would otherwise make a status URL that 404s).
    """
    slug = re.sub(r"[\W_]+", "-", name.lower()).strip("-") or "trip"
    return f"{slug}-{secrets.randbelow(10**6):06d}"


def keyed_booking_id(key: str) -> str:
    """Return the booking id an Idempotency-Key names.

    Made from the key alone, so a repeat finds its booking whatever body it sends.
    """
    return f"trip-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def fingerprint(booking: BookingRequest) -> str:
    """Return a digest of the request, to tell a repeat from a different request."""
    canonical = json.dumps(booking.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def start_booking(
    client: Client, booking: BookingRequest, task_queue: str, key: str | None
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    """Start the saga, or with a known Idempotency-Key, find the one it started."""
    if key is not None:
        return await start_keyed(client, booking, task_queue, key)
    for _ in range(ID_TRIES):
        try:
            return await _start(client, booking, task_queue, generate_unique_username(booking.name))
        except WorkflowAlreadyStartedError:
            continue
    raise RuntimeError(f"no free user_id for {booking.name!r} after {ID_TRIES} tries")


async def start_keyed(
    client: Client, booking: BookingRequest, task_queue: str, key: str
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    """Start the booking the key names; a repeat (even a concurrent one) gets the same."""
    user_id = keyed_booking_id(key)
    try:
        return await _start(client, booking, task_queue, user_id, fingerprint(booking))
    except WorkflowAlreadyStartedError:
        pass
    handle = client.get_workflow_handle_for(BookingWorkflow.run, user_id)
    memo = await (await handle.describe(rpc_timeout=RPC_TIMEOUT)).memo()
    if memo.get("request") != fingerprint(booking):
        raise ApiProblem(
            422, "this Idempotency-Key was used with a different request", user_id=user_id
        )
    return handle


async def _start(
    client: Client,
    booking: BookingRequest,
    task_queue: str,
    user_id: str,
    request_digest: str | None = None,
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    try:
        return await _start_once(client, booking, task_queue, user_id, request_digest)
    except RPCError as err:
        if err.status not in TRANSIENT:
            raise
        # The start may have reached Temporal with only its answer lost: the
        # id, chosen before the call, tells. Not found: safe to retry (503).
        handle = client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            await handle.describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError:
            raise err from None
        return handle


async def _start_once(
    client: Client,
    booking: BookingRequest,
    task_queue: str,
    user_id: str,
    request_digest: str | None,
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    return await client.start_workflow(
        BookingWorkflow.run,
        booking.to_input(user_id),
        id=user_id,
        task_queue=task_queue,
        # A user_id names one booking for as long as Temporal keeps it.
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        memo={"request": request_digest} if request_digest else None,
        static_summary=f"Trip for {booking.name}",
        static_details=f"Car {booking.car}, hotel {booking.hotel}, flight {booking.flight}; "
        f"up to {booking.attempts} attempts a step",
        rpc_timeout=START_RPC_TIMEOUT,
    )


async def book_and_wait(
    client: Client, booking: BookingRequest, task_queue: str, key: str | None, wait: timedelta
) -> tuple[str, BookingState | None]:
    """Start the saga; return its id with the result, if ready in time.

    Once the booking has started, no failure may reach the client as "try
    again": a retry would book a second trip. A result that is late, or that
    Temporal cannot deliver just now, comes back as None with the user_id.
    """
    handle = await start_booking(client, booking, task_queue, key)
    try:
        return handle.id, await asyncio.wait_for(handle.result(), wait.total_seconds())
    except (TimeoutError, RPCError) as err:
        log.info("Booking %s still running or unreachable (%r): answering 202", handle.id, err)
        return handle.id, None


async def find_booking(
    client: Client, user_id: str
) -> tuple[WorkflowHandle[BookingWorkflow, BookingState], WorkflowExecutionStatus | None]:
    """Return a booking's handle and status; 404 if there is no such booking."""
    if not user_id.isprintable() or len(user_id) > 255:
        raise ApiProblem(404, f"no booking {user_id!r}")
    handle = client.get_workflow_handle_for(BookingWorkflow.run, user_id)
    try:
        description = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise ApiProblem(404, f"no booking {user_id!r}") from None
        raise
    if description.workflow_type != "BookingWorkflow":
        raise ApiProblem(404, f"no booking {user_id!r}")
    return handle, description.status


async def booking_status(client: Client, user_id: str) -> BookingStatus:
    """Return a booking's legs while it runs, and its result once done."""
    handle, status = await find_booking(client, user_id)
    if status == WorkflowExecutionStatus.COMPLETED:
        return status_view(await handle.result())
    if status == WorkflowExecutionStatus.RUNNING:
        try:
            state = await handle.query(BookingWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            # No worker, or one that cannot answer (say, mid-deploy): not now.
            raise ApiProblem(503, "no worker answered; try again shortly", RETRY_AFTER) from err
        return status_view(state)
    return BookingStatus(user_id=user_id, status=ENDED_WITHOUT_RESULT.get(status, "failed"))


async def cancel_booking(client: Client, user_id: str) -> str:
    """Ask a running booking to cancel; 409 if it has already ended."""
    handle, status = await find_booking(client, user_id)
    ended = ApiProblem(409, f"booking {user_id} has already ended", user_id=user_id)
    if status != WorkflowExecutionStatus.RUNNING:
        raise ended
    try:
        await handle.cancel(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended since we looked
            raise ended from None
        raise
    return handle.id


async def readiness(client: Client, task_queue: str) -> int:
    """Return how many workers poll `task_queue` now; 503 if none (or no Temporal)."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=RPC_TIMEOUT,
    )
    now = datetime.now(UTC)
    fresh = [
        poller
        for poller in response.pollers
        if now - poller.last_access_time.ToDatetime(UTC) < POLLER_FRESHNESS
    ]
    if not fresh:
        raise ApiProblem(503, f"no worker polls task queue {task_queue!r}", RETRY_AFTER)
    return len(fresh)


# --- JSON shapes --------------------------------------------------------------------


def trip_result(state: BookingState) -> TripResult:
    """Return the tutorial's JSON for a finished booking, plus the details."""
    if state.cancelled:
        return TripCancelled(
            user_id=state.user_id,
            cancelled=True,
            result="Voyage cancelled",
            reason=state.reason,
            failed_step=state.failed_leg,
            compensations=[
                UndoDone(step=c.leg, outcome=c.outcome, error=c.error) for c in state.compensations
            ],
        )
    items = {leg: state.leg(leg).item_id for leg in Leg}
    return TripBooked(
        user_id=state.user_id,
        cancelled=False,
        car=f"Car: {items[Leg.CAR]}",
        hotel=f"Hotel: {items[Leg.HOTEL]}",
        flight=f"Flight: {items[Leg.FLIGHT]}",
        result=" ".join(f"Booked {leg}: {item}" for leg, item in items.items()),
    )


def status_view(state: BookingState) -> BookingStatus:
    """Return a booking's state as `GET /bookings/<id>` shows it.

    The result is shown as soon as the outcome is final, which the progress
    query can report a moment before the workflow has closed.
    """
    undone = {c.leg: c for c in state.compensations}
    legs = {}
    for leg in state.legs:
        undo = undone.get(leg.leg)
        legs[leg.leg] = LegView(
            item=leg.item_id,
            state=undo.outcome.value if undo else leg.status.value,
            reservation_id=leg.reservation_id,
            error=undo.error if undo else leg.error,
        )
    return BookingStatus(
        user_id=state.user_id,
        status=state.outcome.value,
        legs=legs,
        result=trip_result(state) if state.outcome in FINAL else None,
    )


def accepted(user_id: str) -> tuple[Response, int, dict[str, str]]:
    """Return a 202 pointing at the booking's status."""
    status_url = url_for("get_booking", user_id=user_id)
    body = BookingAccepted(user_id=user_id, status="in progress", status_url=status_url)
    return send(body), 202, {"Location": status_url}


def send(model: BaseModel) -> Response:
    """Return a model as JSON, leaving out fields it does not have."""
    return jsonify(model.model_dump(mode="json", exclude_none=True))


# --- Request reading ----------------------------------------------------------------


def read_booking() -> BookingRequest:
    """Parse and validate the request body."""
    if not request.is_json:
        raise UnsupportedMediaType("send the booking as Content-Type: application/json")
    try:
        body = request.get_json()  # malformed JSON: a 400 from Flask, through http_error
    except RecursionError:  # json's parser recurses per level of nesting
        raise ApiProblem(400, "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "the body must be a JSON object")
    try:
        return BookingRequest.model_validate(body)
    except ValidationError as err:
        fields = {
            ".".join(map(str, e["loc"])) or "body": FIELD_MESSAGES.get(e["type"], e["msg"])
            for e in err.errors()
        }
        first = next(iter(fields))
        raise ApiProblem(400, f"invalid field '{first}': {fields[first]}", fields=fields) from None


def idempotency_key() -> str | None:
    """Return the request's Idempotency-Key, if any (a quoted sf-string is unquoted)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= 255 or not all("!" <= c <= "~" for c in key):
        raise ApiProblem(400, "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


# --- The app ------------------------------------------------------------------------


def create_app(temporal: TemporalGateway, settings: ApiSettings | None = None) -> Flask:
    """Build the API around a process-wide Temporal gateway."""
    settings = settings or ApiSettings()
    wait = timedelta(seconds=settings.book_wait_seconds)
    queue = settings.task_queue
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = True  # type: ignore[attr-defined]
    app.extensions["temporal_gateway"] = temporal
    register_error_handlers(app)
    # Request counts and latencies at /metrics, labelled by route (never by a
    # booking id); an app of its own registry, so tests can build many apps.
    PrometheusMetrics(app, registry=CollectorRegistry(), group_by="url_rule")
    document = openapi_document()

    @app.post("/book")
    def book_vacation() -> Response | tuple[Response, int, dict[str, str]]:
        """Book a trip and answer with what was booked or why it was cancelled."""
        booking, key = read_booking(), idempotency_key()
        user_id, state = temporal.call(
            lambda c: book_and_wait(c, booking, queue, key, wait), wait.total_seconds() + 30
        )
        return send(trip_result(state)) if state else accepted(user_id)

    @app.post("/bookings")
    def start_booking_view() -> tuple[Response, int, dict[str, str]]:
        """Start a booking; answer at once with where to follow it."""
        booking, key = read_booking(), idempotency_key()
        handle = temporal.call(lambda c: start_booking(c, booking, queue, key))
        return accepted(handle.id)

    @app.get("/bookings/<user_id>")
    def get_booking(user_id: str) -> Response:
        """Show a booking's legs, and its result once done."""
        return send(temporal.call(lambda c: booking_status(c, user_id)))

    @app.post("/bookings/<user_id>/cancel")
    def cancel(user_id: str) -> tuple[Response, int, dict[str, str]]:
        """Cancel a running booking: its registered undos run."""
        return accepted(temporal.call(lambda c: cancel_booking(c, user_id)))

    @app.get("/healthz")
    def healthz() -> Response:
        """Answer while the process is alive."""
        return send(Health(status="ok"))

    @app.get("/readyz")
    def readyz() -> Response:
        """Answer 200 when Temporal is reachable and a worker polls the task queue."""
        return send(Health(status="ready", workers=temporal.call(lambda c: readiness(c, queue))))

    @app.get("/openapi.json")
    def openapi() -> Response:
        """Serve the OpenAPI document."""
        return jsonify(document)

    return app


def problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """Return an RFC 9457 problem details answer: the one shape of every error."""
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.path,
        **extra,
    )
    response = send(body)
    response.status_code = status
    response.mimetype = PROBLEM
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    """Map every failure to a problem+json answer; no traceback reaches a client."""

    @app.errorhandler(ApiProblem)
    def api_problem(err: ApiProblem) -> Response:
        return problem(err.status, err.detail, err.headers, **err.extra)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        headers = dict(err.get_headers()[1:])  # keeps Allow on a 405
        detail = err.description or err.name
        if isinstance(err, BadRequest) and not isinstance(err, NotFound):
            detail = "the body is not valid JSON"
        return problem(err.code or 500, detail, headers)

    @app.errorhandler(TemporalUnavailable)
    def temporal_down(err: TemporalUnavailable) -> Response:
        log.warning("Cannot connect to Temporal: %s", err)
        return problem(503, UNREACHABLE, RETRY_AFTER)

    @app.errorhandler(RPCError)
    def temporal_refused(err: RPCError) -> Response:
        log.warning("Temporal call failed: %s (%s)", err.message, err.status.name)
        if err.status in TRANSIENT:
            return problem(503, UNREACHABLE, RETRY_AFTER)
        return problem(502, f"Temporal refused the call: {err.message}")

    @app.errorhandler(WorkflowFailureError)
    def workflow_failed(err: WorkflowFailureError) -> Response:
        log.error("Booking workflow failed: %s", err.cause)
        return problem(502, "the booking workflow failed; see the Temporal Web UI")

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        log.exception("Unhandled error")
        return problem(500, "internal error")


# --- Serving ------------------------------------------------------------------------


class GracefulOnInterrupt(Arbiter):
    """gunicorn's arbiter, draining on Ctrl-C as on SIGTERM (its own SIGINT is abrupt)."""

    def handle_int(self) -> None:
        """Stop gracefully: let requests in flight finish."""
        self.handle_term()


class Server(BaseApplication):
    """gunicorn, configured from ApiSettings, serving one app per worker process."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        """Apply the settings."""
        s = self.settings
        self.cfg.set("bind", [f"{s.host}:{s.port}"])
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("workers", s.processes)
        self.cfg.set("threads", s.threads)
        # A request may wait BOOK_WAIT_SECONDS for a saga; give it room.
        self.cfg.set("timeout", int(s.book_wait_seconds) + 30)
        # Room for a request's wait, plus a start that Temporal is slow to take.
        self.cfg.set("graceful_timeout", int(s.book_wait_seconds) + 20)
        # gunicorn 27's control socket lives in $HOME, shared by every API
        # process on the machine; nothing here uses it.
        self.cfg.set("control_socket_disable", True)
        # After the worker's own signal handlers are in place (post_fork is too early).
        self.cfg.set("post_worker_init", _ignore_interrupt)
        self.cfg.set("worker_exit", _close_gateway)

    def load(self) -> "_WSGIAppType":
        """Build the app in the worker process, after the fork.

        The SDK's runtime and client do not survive a fork.
        """
        config = temporal_connect_config()
        gateway = TemporalGateway.start(lambda: Client.connect(**config))
        # Flask types its environ as dict, gunicorn's stubs as MutableMapping.
        return cast("_WSGIAppType", create_app(gateway, self.settings))

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM, then drain."""
        GracefulOnInterrupt(self).run()


def _ignore_interrupt(worker: Any) -> None:
    # Ctrl-C reaches every process of the terminal's group; workers leave it
    # to the arbiter, which then stops them gracefully.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _close_gateway(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask) and "temporal_gateway" in app.extensions:
        app.extensions["temporal_gateway"].close()


def main() -> None:
    """Serve the API with gunicorn."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    Server(ApiSettings.from_env()).run()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"starter: {err}")
