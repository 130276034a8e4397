"""Following bookings: find one, show where it stands, cancel it, list them, count workers."""

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    ListWorkflowExecutionsRequest,
)
from temporalio.client import (
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.converter import decode_typed_search_attributes
from temporalio.service import RPCError, RPCStatusCode

from api.access import Caller
from api.temporal import (
    EXPLAIN,
    RPC_TIMEOUT,
    BookingEnded,
    BookingsStuck,
    Operations,
    PageTokenRefused,
    Unavailable,
    bounded,
    find,
    reaching_temporal,
)
from deployment.stuck import Stuck, stuck, waiting_for
from namespace import missing_for_api
from shared import (
    BOOKING_CLIENT,
    BOOKING_CUSTOMER,
    BOOKING_STATUS,
    DEPLOYMENT_NAME,
    BookingState,
    Outcome,
)
from workflows import BookingWorkflow

log = logging.getLogger("api.following")

QUERY_TIMEOUT = timedelta(seconds=5)
"""How long a worker may take to answer the progress query."""

POLLER_FRESHNESS = timedelta(minutes=2)
"""A worker seen polling this recently counts as ready (its polls last up to a minute)."""

PAGE_TOKEN_REFUSED = {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN}
"""How Temporal answers a page token it cannot read (UNKNOWN: "something went wrong")."""

NO_WORKER_ANSWERED = "no worker answered; try again shortly"

STUCK_CHECK_EVERY = timedelta(seconds=5)
"""How long `/readyz` reuses a look for stuck bookings."""


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


@dataclass
class StuckCheck:
    """The last look for stuck bookings, reused for `STUCK_CHECK_EVERY`.

    Readiness probes come often, from every load balancer, and Temporal
    limits the calls per deployment: one look at a time serves them all. A
    look that Temporal is too busy for, or that outlives its bound, keeps the
    last finding: a slow answer is not an outage (the breaker stays closed).
    """

    found: list[Stuck] = field(default_factory=list)
    at: float = -math.inf
    within: timedelta = RPC_TIMEOUT
    """How long one look may take."""

    async def or_new(self, look: Callable[[], Awaitable[list[Stuck]]]) -> list[Stuck]:
        """Return the last look's finding if recent, else `look` again."""
        now = time.monotonic()
        if now - self.at >= STUCK_CHECK_EVERY.total_seconds():
            self.at = now  # before the look: the probes meanwhile take the last finding
            try:
                self.found = await bounded(look(), self.within)
            except TimeoutError:
                log.warning("The look for stuck bookings took too long; keeping the last one")
            except RPCError as err:
                if err.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                log.warning("Temporal too busy to look for stuck bookings; keeping the last look")
        return self.found


@dataclass(frozen=True)
class Following(Operations):
    """Finds, follows, cancels and lists bookings; tells whether the saga can be served."""

    deployment_name: str = DEPLOYMENT_NAME
    """The worker deployment whose versions serve the task queue."""
    last_stuck: StuckCheck = field(default_factory=StuckCheck)

    @reaching_temporal
    async def status(
        self, user_id: str, caller: Caller
    ) -> BookingState | WorkflowExecutionStatus | None:
        """Return a booking's state: its result once done, its progress while it runs.

        A booking that ended without a result gives its execution status instead.
        """
        handle, found = await find(self.client, user_id, caller)
        if found.status == WorkflowExecutionStatus.COMPLETED:
            return await bounded(handle.result())
        if found.status != WorkflowExecutionStatus.RUNNING:
            return found.status
        query = handle.query(BookingWorkflow.progress, rpc_timeout=QUERY_TIMEOUT)
        try:
            return await bounded(query, QUERY_TIMEOUT)
        except RPCError as err:
            if err.status == RPCStatusCode.UNAVAILABLE:
                raise  # Temporal's, not the worker's
        except (TimeoutError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
            pass  # no worker, or one that cannot answer it
        # Not an outage (the breaker stays): stuck for good, or not now (say, mid-restart).
        raise Unavailable(await self._why_unanswered(found))

    async def _why_unanswered(self, found: WorkflowExecutionDescription) -> str:
        """Say why a running booking's progress went unanswered: what it waits for, if known."""
        try:
            waits = await bounded(waiting_for(self.client, found, self.deployment_name))
        except (TimeoutError, RPCError):
            return NO_WORKER_ANSWERED  # unknown: no worker answered, and that is all we know
        return f"the booking cannot move: {waits}" if waits else NO_WORKER_ANSWERED

    @reaching_temporal
    async def cancel(self, user_id: str, caller: Caller) -> str:
        """Ask a running booking to cancel (its undos run); return its id."""
        handle, found = await find(self.client, user_id, caller)
        status = found.status
        ended = BookingEnded(f"booking {user_id} has already ended", user_id)
        if status != WorkflowExecutionStatus.RUNNING:
            raise ended
        if found.typed_search_attributes.get(BOOKING_STATUS) == Outcome.NEEDS_ATTENTION:
            raise BookingEnded(
                f"booking {user_id} is undone already, but for a leg that waits for a "
                "person: an operator's decision",
                user_id,
            )
        try:
            await bounded(handle.cancel(rpc_timeout=RPC_TIMEOUT))
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # it ended since we looked
                raise ended from None
            raise
        return handle.id

    @reaching_temporal
    async def workers(self) -> int:
        """Return how many workers poll the task queue now.

        Raises:
            Unavailable: None polls, or the namespace lacks the saga's search
                attributes (which a worker adds as it starts, where allowed).

        """
        if lacking := await missing_for_api(self.client, EXPLAIN):
            raise Unavailable(lacking)
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
            raise Unavailable(f"no worker polls task queue {self.task_queue!r}")
        return len(fresh)

    @reaching_temporal
    async def check_nothing_stuck(self, *, name_them: bool) -> None:
        """Raise `BookingsStuck` if any booking cannot make progress (`deployment.stuck`).

        `name_them`: say the first ids (to anyone: an API without keys shows
        every booking to every caller); else counts only.
        """
        if found := await self.last_stuck.or_new(
            lambda: stuck(self.client, self.deployment_name, self.task_queue)
        ):
            detail = "; ".join(str(group) if name_them else group.summary for group in found)
            count = sum(group.bookings.count for group in found)
            raise BookingsStuck(f'{detail} (docs/operating.md, "Stuck bookings")', count)

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


def listing_query(
    task_queue: str, status: Outcome | None, customer: str | None, client: str | None = None
) -> str:
    """Return the visibility query of a listing: this API's bookings, narrowed by each filter.

    Every value is a quoted literal (`quoted`), so no input can widen it.
    """
    clauses = [f"WorkflowType = {quoted('BookingWorkflow')}", f"TaskQueue = {quoted(task_queue)}"]
    if status is not None:
        clauses.append(f"{BOOKING_STATUS.name} = {quoted(status.value)}")
        if status in (Outcome.BOOKING, Outcome.COMPENSATING, Outcome.NEEDS_ATTENTION):
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
            or bend the literal (`api.models.BookingQuery` refuses them first).

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
