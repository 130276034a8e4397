"""The API's Temporal operations: start, find, follow, cancel and list bookings.

They run on the client's loop and say what went wrong with domain errors
(`BookingNotFound`, `BookingEnded`, ...); `api/errors.py` alone turns those
into HTTP answers.
"""

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    ListWorkflowExecutionsRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.converter import decode_typed_search_attributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.access import Caller
from api.breaker import UNREACHABLE_STATUSES, Breaker, unreachable
from api.contract import BookingRequest
from shared import (
    BOOKING_CLIENT,
    BOOKING_CUSTOMER,
    BOOKING_STATUS,
    DEFAULT_DEADLINE_SECONDS,
    BookingState,
    Outcome,
    search_attributes_at_start,
)
from workflows import BookingWorkflow

log = logging.getLogger("api.bookings")

START_TIMEOUT = timedelta(seconds=5)
"""How long a booking's start may take, its lookup included, before the API answers 503."""

LOOKUP_TIMEOUT = timedelta(seconds=1)
"""Of that, the time kept to look a start up when its answer is lost."""

QUERY_TIMEOUT = timedelta(seconds=5)
"""How long a worker may take to answer the progress query."""

RPC_TIMEOUT = timedelta(seconds=5)
"""Any other single call to Temporal."""

ID_TRIES = 5
"""New suffixes to try when a user_id is already taken (a 1 in 10^6 clash)."""

POLLER_FRESHNESS = timedelta(minutes=2)
"""A worker seen polling this recently counts as ready (its polls last up to a minute)."""

REFUSED = {
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.NOT_FOUND,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.UNIMPLEMENTED,
}
"""RPC failures that say a start was turned away before it was acted on (say, an
unknown namespace): no attempt of it can have started a booking."""

PAGE_TOKEN_REFUSED = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN}
"""How Temporal answers a page token it cannot read (UNKNOWN: "something went wrong")."""

TRANSIENT = {*UNREACHABLE_STATUSES, RPCStatusCode.RESOURCE_EXHAUSTED}
"""RPC failures that say "not now" rather than "no": worth a retry later."""

UNREACHABLE = "Temporal is unreachable; try again shortly"
NO_WORKER_ANSWERED = "no worker answered; try again shortly"

Handle = WorkflowHandle[BookingWorkflow, BookingState]
P = ParamSpec("P")
T = TypeVar("T")


class BookingError(Exception):
    """A booking operation that cannot be done; `user_id` names the booking, if known."""

    def __init__(self, detail: str, user_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.user_id = user_id


class BookingNotFound(BookingError):
    """No booking has this id, or none that the caller may see."""


class BookingEnded(BookingError):
    """The booking has ended: it can no longer be cancelled."""


class KeyReused(BookingError):
    """An Idempotency-Key already names a booking made with another request."""


class NoWorker(BookingError):
    """No worker polls the task queue, or none answered."""


class PageTokenRefused(BookingError):
    """Temporal could not read a listing's page token."""


class IdTaken(Exception):
    """The id drawn for a booking without a key is another booking's: draw again."""


class TemporalUnavailable(BookingError):
    """Temporal cannot be reached now."""


class StartUnknown(TemporalUnavailable):
    """Temporal did not confirm a booking's start in time: it may or may not have started."""

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"Temporal did not confirm booking {user_id}; it may have started: follow "
            f"/bookings/{user_id} before booking again, or retry with an Idempotency-Key",
            user_id,
        )


def reaching_temporal(
    operation: Callable[Concatenate["Bookings", P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate["Bookings", P], Coroutine[Any, Any, T]]:
    """Fail fast while the breaker is open; show it what `operation` met on the way.

    An error that says Temporal could not be reached opens the breaker
    (`api.breaker.unreachable`); a call that outlived its bound, or a failed
    connect, becomes `TemporalUnavailable`.
    """

    @wraps(operation)
    async def reaching(self: "Bookings", /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.breaker.is_open:
            raise TemporalUnavailable(UNREACHABLE)
        try:
            return await operation(self, *args, **kwargs)
        except TemporalUnavailable as err:
            if err.__cause__ is not None:
                self.breaker.observe(err.__cause__)
            raise
        except (RPCError, TimeoutError, RuntimeError) as err:
            if not unreachable(err):
                raise
            self.breaker.observe(err)
            if isinstance(err, RPCError):
                raise  # api/errors.py answers it (503)
            raise TemporalUnavailable(UNREACHABLE) from err

    return reaching


@dataclass(frozen=True)
class ListedBooking:
    """One booking as Temporal's visibility lists it."""

    user_id: str
    status: WorkflowExecutionStatus | None
    outcome: Outcome | None
    """Its `BookingStatus`: where the saga last said it stood (None: nothing it knows)."""
    customer: str | None
    started_at: datetime


@dataclass(frozen=True)
class BookingPage:
    """A page of bookings, and Temporal's token for the next (None on the last)."""

    bookings: list[ListedBooking]
    next_page_token: bytes | None


async def bounded(call: Awaitable[T], within: timedelta = RPC_TIMEOUT) -> T:
    """Await one call to Temporal for at most `within`, then raise TimeoutError.

    `rpc_timeout` bounds each attempt only: against a server that refuses
    connections, the SDK retries for longer than any request should wait.
    """
    async with asyncio.timeout(within.total_seconds()):
        return await call


@dataclass(frozen=True)
class Bookings:
    """The operations, bound to the process's client and the saga's task queue."""

    client: Client
    task_queue: str
    new_user_id: Callable[[str], str]
    """Makes a booking id from the traveller's name (starter.generate_unique_username)."""
    breaker: Breaker
    """Open while Temporal is unreachable: requests then answer 503 at once."""
    deadline_seconds: int = DEFAULT_DEADLINE_SECONDS
    """A booking's deadline unless its request gives one (BOOKING_DEADLINE_SECONDS)."""

    @reaching_temporal
    async def start(self, booking: BookingRequest, key: str | None, caller: Caller) -> Handle:
        """Start the saga for `caller`, or with a known Idempotency-Key, find the one it started."""
        if key is not None:
            return await self._start_keyed(booking, key, caller)
        for _ in range(ID_TRIES):
            try:
                return await self._start(booking, self.new_user_id(booking.name), caller)
            except (WorkflowAlreadyStartedError, IdTaken):
                continue
        raise RuntimeError(f"no free user_id for {booking.name!r} after {ID_TRIES} tries")

    async def result(self, handle: Handle, wait: timedelta) -> BookingState | None:
        """Return the saga's result if it ends within `wait`, else None.

        Once the booking has started, no failure may reach the client as "try
        again": a retry would book a second trip. A result that is late, or that
        Temporal cannot deliver just now, is None; the caller answers 202. So
        is one still awaited once Temporal is found unreachable (the breaker
        open and its probe unanswered): its request stops waiting at once, and
        the client follows the booking on the status URL.
        """
        try:
            async with asyncio.timeout(wait.total_seconds()) as deadline:
                with self.breaker.cutting_short(deadline):
                    return await handle.result()
        except TimeoutError:
            log.info("Booking %s still running, or Temporal unreachable: answering 202", handle.id)
        except RPCError as err:
            self.breaker.observe(err)
            log.info("Booking %s: no result from Temporal (%r): answering 202", handle.id, err)
        return None

    @reaching_temporal
    async def status(
        self, user_id: str, caller: Caller
    ) -> BookingState | WorkflowExecutionStatus | None:
        """Return a booking's state: its result once done, its progress while it runs.

        A booking that ended without a result gives its execution status instead.
        """
        handle, status = await self._find(user_id, caller)
        if status == WorkflowExecutionStatus.COMPLETED:
            return await bounded(handle.result())
        if status != WorkflowExecutionStatus.RUNNING:
            return status
        query = handle.query(BookingWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
        try:
            return await bounded(query, QUERY_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.UNAVAILABLE:
                raise  # Temporal's, not the worker's
            raise NoWorker(NO_WORKER_ANSWERED) from err
        except (TimeoutError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            # No worker, or one that cannot answer (say, mid-deploy): not now.
            raise NoWorker(NO_WORKER_ANSWERED) from err

    @reaching_temporal
    async def cancel(self, user_id: str, caller: Caller) -> str:
        """Ask a running booking to cancel (its undos run); return its id."""
        handle, status = await self._find(user_id, caller)
        ended = BookingEnded(f"booking {user_id} has already ended", user_id)
        if status != WorkflowExecutionStatus.RUNNING:
            raise ended
        try:
            await bounded(handle.cancel(rpc_timeout=RPC_TIMEOUT))
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # it ended since we looked
                raise ended from None
            raise
        return handle.id

    @reaching_temporal
    async def workers(self) -> int:
        """Return how many workers poll the task queue now; `NoWorker` if none."""
        response = await bounded(
            self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=self.task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                ),
                timeout=RPC_TIMEOUT,
            )
        )
        now = datetime.now(UTC)
        fresh = [
            poller
            for poller in response.pollers
            if now - poller.last_access_time.ToDatetime(UTC) < POLLER_FRESHNESS
        ]
        if not fresh:
            raise NoWorker(f"no worker polls task queue {self.task_queue!r}")
        return len(fresh)

    @reaching_temporal
    async def list_bookings(
        self,
        status: Outcome | None,
        customer: str | None,
        page_size: int,
        after: bytes | None,
        caller: Caller,
    ) -> BookingPage:
        """Return a page of the bookings `caller` may see, in Temporal's visibility order.

        `after` is the previous page's `next_page_token`.
        """
        request = ListWorkflowExecutionsRequest(
            namespace=self.client.namespace,
            page_size=page_size,
            next_page_token=after or b"",
            # A caller with an owner (a client) sees its own bookings alone.
            query=listing_query(self.task_queue, status, customer, caller.owner),
        )
        # Temporal answers a token it cannot read with a "please retry" (UNKNOWN),
        # which the client would retry for seconds: a request with a token is not retried.
        listing = self.client.workflow_service.list_workflow_executions(
            request, retry=after is None, timeout=RPC_TIMEOUT
        )
        try:
            response = await bounded(listing)
        except RPCError as err:
            if after is not None and err.status in PAGE_TOKEN_REFUSED:
                raise PageTokenRefused(
                    "page_token was not accepted: start again from the first page"
                ) from err
            raise
        return BookingPage(
            [listed(info) for info in response.executions], response.next_page_token or None
        )

    async def _find(
        self, user_id: str, caller: Caller
    ) -> tuple[Handle, WorkflowExecutionStatus | None]:
        """Return a booking's handle and status; `BookingNotFound` unless `caller` may see it.

        Another client's booking is not found, exactly as a missing one: its
        existence is not told.
        """
        missing = BookingNotFound(f"no booking {user_id!r}")
        if not user_id.isprintable() or len(user_id) > 255:
            raise missing
        handle = self.client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            description = await bounded(handle.describe(rpc_timeout=RPC_TIMEOUT))
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise missing from None
            raise
        if description.workflow_type != "BookingWorkflow" or not caller.may_see(owner(description)):
            raise missing
        return handle, description.status

    async def _start_keyed(self, booking: BookingRequest, key: str, caller: Caller) -> Handle:
        """Start the booking the key names; a repeat (even a concurrent one) gets the same."""
        user_id, digest = keyed_booking_id(key, caller.owner), fingerprint(booking)
        try:
            return await self._start(booking, user_id, caller, digest)
        except WorkflowAlreadyStartedError:
            pass
        handle = self.client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            found = await bounded(handle.describe(rpc_timeout=LOOKUP_TIMEOUT), LOOKUP_TIMEOUT)
        except (RPCError, TimeoutError) as err:
            raise StartUnknown(user_id) from err  # it exists; name it, as a lost start does
        if not await started_by(found, digest, caller):
            raise key_reused(found, caller)
        return handle

    async def _start(
        self,
        booking: BookingRequest,
        user_id: str,
        caller: Caller,
        request_digest: str | None = None,
    ) -> Handle:
        # What tells this request's booking from any other at the id, should the
        # answer be lost: with a key, its body's digest (a repeat is the same
        # request); without, a token of its own.
        marker = request_digest or secrets.token_hex(16)
        keyed = request_digest is not None
        attempt = START_TIMEOUT - LOOKUP_TIMEOUT
        try:
            return await bounded(
                self.client.start_workflow(
                    BookingWorkflow.run,
                    booking.to_input(user_id, self.deadline_seconds),
                    id=user_id,
                    task_queue=self.task_queue,
                    search_attributes=search_attributes_at_start(booking.name, caller.owner),
                    # A user_id names one booking for as long as Temporal keeps it.
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    memo={"request": marker},
                    static_summary=f"Trip for {booking.name}",
                    static_details=f"Car {booking.car}, hotel {booking.hotel}, "
                    f"flight {booking.flight}; up to {booking.attempts} attempts a step",
                    rpc_timeout=attempt,
                ),
                attempt,
            )
        except RPCError as err:
            if err.status in REFUSED:
                raise  # turned away before it was acted on: nothing started
            # Anything else may have come after an earlier attempt landed.
            return await self._look_up_start(user_id, caller, marker, keyed)
        except TimeoutError:
            return await self._look_up_start(user_id, caller, marker, keyed)

    async def _look_up_start(
        self, user_id: str, caller: Caller, marker: str, keyed: bool
    ) -> Handle:
        """Find a start whose answer was lost: the id, chosen before the call, tells.

        Found, and started by this request: the booking. Found, but another's
        (the id was taken before): `KeyReused` with a key, else `IdTaken` (this
        start cannot land there). Not found, or no answer: an attempt may still
        be on its way to Temporal, so the 503 (`StartUnknown`) names the
        booking, to be followed (or retried with its Idempotency-Key) rather
        than booked anew.
        """
        handle = self.client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            found = await bounded(handle.describe(rpc_timeout=LOOKUP_TIMEOUT), LOOKUP_TIMEOUT)
        except (RPCError, TimeoutError) as lookup:
            raise StartUnknown(user_id) from lookup
        if await started_by(found, marker, caller):
            return handle
        if keyed:
            raise key_reused(found, caller)
        raise IdTaken(user_id)


async def started_by(found: WorkflowExecutionDescription, marker: str, caller: Caller) -> bool:
    """Whether the booking found was started by the request `marker` names, for `caller`."""
    return owner(found) == caller.owner and (await found.memo()).get("request") == marker


def key_reused(found: WorkflowExecutionDescription, caller: Caller) -> KeyReused:
    """Return the error for a key that names a booking made with another request.

    Its id is told to the caller only if the booking is the caller's own (its
    id is made for the caller, so another's there is a 1 in 2^64 clash).
    """
    mine = owner(found) == caller.owner
    return KeyReused(
        "this Idempotency-Key was used with a different request", found.id if mine else None
    )


def owner(found: WorkflowExecutionDescription) -> str | None:
    """Return the client that made a booking (its `BookingClient`); None if made while open."""
    return found.typed_search_attributes.get(BOOKING_CLIENT)


def listing_query(
    task_queue: str, status: Outcome | None, customer: str | None, client: str | None = None
) -> str:
    """Return the visibility query of a listing: this API's bookings, narrowed by each filter.

    Every value is a quoted literal (`quoted`), so no input can widen it.
    """
    clauses = [f"WorkflowType = {quoted('BookingWorkflow')}", f"TaskQueue = {quoted(task_queue)}"]
    if status is not None:
        clauses.append(f"{BOOKING_STATUS.name} = {quoted(status.value)}")
        if status in (Outcome.BOOKING, Outcome.COMPENSATING):
            # Not one that an operator terminated on its way (GET shows it "terminated").
            clauses.append(f"ExecutionStatus = {quoted('Running')}")
    if customer is not None:
        clauses.append(f"{BOOKING_CUSTOMER.name} = {quoted(customer)}")
    if client is not None:
        clauses.append(f"{BOOKING_CLIENT.name} = {quoted(client)}")
    return " AND ".join(clauses)


def quoted(value: str) -> str:
    """Return `value` as a string literal of a visibility query.

    Raises:
        ValueError: `value` holds a double quote or a backslash, which could end
            or bend the literal (`api.contract.BookingQuery` refuses them first).

    """
    if '"' in value or "\\" in value:
        raise ValueError(f"cannot quote {value!r} in a visibility query")
    return f'"{value}"'


def listed(info: WorkflowExecutionInfo) -> ListedBooking:
    """Return a booking as a listing shows it, from Temporal's record of its run."""
    attributes = decode_typed_search_attributes(info.search_attributes)
    return ListedBooking(
        user_id=info.execution.workflow_id,
        status=WorkflowExecutionStatus(info.status) if info.status else None,
        outcome=next((o for o in Outcome if o == attributes.get(BOOKING_STATUS)), None),
        customer=attributes.get(BOOKING_CUSTOMER),
        started_at=info.start_time.ToDatetime(UTC),
    )


def keyed_booking_id(key: str, client: str | None = None) -> str:
    """Return the booking id an Idempotency-Key names for a client (None: the API is open).

    Made from the client and the key alone, so a repeat finds its booking
    whatever body it sends, and two clients sending the same key find two.
    """
    # Neither a key nor a client name holds a newline: the two cannot run together.
    scoped = key if client is None else f"{client}\n{key}"
    return f"trip-{hashlib.sha256(scoped.encode()).hexdigest()[:16]}"


def fingerprint(booking: BookingRequest) -> str:
    """Return a digest of the request, to tell a repeat from a different request."""
    # Fields left out stay out, so that a field added later (deadline_seconds)
    # leaves the digest of a request that does not use it as it was.
    canonical = json.dumps(
        booking.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
