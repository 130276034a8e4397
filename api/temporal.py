"""What the API's Temporal operations share: their errors, their bounds, the breaker's watch.

The operations (`api/starting.py`, `api/following.py`) run on the client's
loop and say what went wrong with the errors here, one for each thing a
caller can do about it; `api/errors.py` alone turns them into HTTP answers.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar

from temporalio.client import Client, WorkflowExecutionDescription, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from api.access import Caller
from api.breaker import UNREACHABLE_STATUSES, Breaker, unreachable
from namespace import missing_for_api
from shared import BOOKING_CLIENT, BookingState
from workflows import BookingWorkflow

RPC_TIMEOUT = timedelta(seconds=5)
"""Any single call to Temporal that has no bound of its own."""

EXPLAIN = timedelta(seconds=1)
"""How long the look at the namespace's search attributes after a refusal may take."""

TRANSIENT = {*UNREACHABLE_STATUSES, RPCStatusCode.RESOURCE_EXHAUSTED}
"""RPC failures that say "not now" rather than "no": worth a retry later."""

UNREACHABLE = "Temporal is unreachable; try again shortly"

Handle = WorkflowHandle[BookingWorkflow, BookingState]
P = ParamSpec("P")
T = TypeVar("T")
Ops = TypeVar("Ops", bound="Operations")


class BookingError(Exception):
    """A booking operation that cannot be done; `user_id` names the booking, if known."""

    def __init__(self, detail: str, user_id: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.user_id = user_id


class BookingNotFound(BookingError):
    """No booking has this id, or none that the caller may see: look elsewhere."""


class BookingEnded(BookingError):
    """The booking has ended, so it can no longer be cancelled: nothing to do."""


class DecisionRefused(BookingError):
    """The saga refused a person's decision about a leg; the detail is its reason."""


class KeyReused(BookingError):
    """An Idempotency-Key already names a booking made with another request: use a new key."""


class PageTokenRefused(BookingError):
    """Temporal could not read a listing's page token: start from the first page."""


class Unavailable(BookingError):
    """Not now: Temporal, a worker or the namespace cannot serve this yet; try again shortly.

    Its cause, when it has one, is what Temporal answered (or did not).
    """


class BookingsStuck(Unavailable):
    """Bookings that cannot make progress until a person acts (docs/operating.md)."""

    def __init__(self, detail: str, count: int) -> None:
        super().__init__(detail)
        self.count = count


def reaching_temporal(
    operation: Callable[Concatenate[Ops, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Ops, P], Coroutine[Any, Any, T]]:
    """Fail fast while the breaker is open; show it what `operation` met on the way.

    An error that says Temporal could not be reached opens the breaker
    (`api.breaker.unreachable`); a call that outlived its bound, or a failed
    connect, becomes `Unavailable`. A refusal that the namespace's lack of
    the saga's search attributes explains becomes `Unavailable` too, saying
    how to add them.
    """

    @wraps(operation)
    async def reaching(self: Ops, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.breaker.is_open:
            raise Unavailable(UNREACHABLE)
        try:
            return await operation(self, *args, **kwargs)
        except Unavailable as err:
            if err.__cause__ is not None:
                self.breaker.observe(err.__cause__)
            raise
        except (RPCError, TimeoutError, RuntimeError) as err:
            if refused(err) and (explained := await missing_for_api(self.client, EXPLAIN)):
                raise Unavailable(explained) from err
            if not unreachable(err):
                raise
            self.breaker.observe(err)
            if isinstance(err, RPCError):
                raise  # api/errors.py answers it (503)
            raise Unavailable(UNREACHABLE) from err

    return reaching


def refused(err: BaseException) -> bool:
    """Whether Temporal turned a call away as invalid (say, for an unknown search attribute)."""
    return isinstance(err, RPCError) and err.status == RPCStatusCode.INVALID_ARGUMENT


@dataclass(frozen=True)
class Operations:
    """Temporal operations on the saga, bound to the process's client and its task queue."""

    client: Client
    task_queue: str
    breaker: Breaker
    """Open while Temporal is unreachable: requests then answer 503 at once."""


async def bounded(call: Awaitable[T], within: timedelta = RPC_TIMEOUT) -> T:
    """Await one call to Temporal for at most `within`, then raise TimeoutError.

    `rpc_timeout` bounds each attempt only: against a server that refuses
    connections, the SDK retries for longer than any request should wait.
    """
    async with asyncio.timeout(within.total_seconds()):
        return await call


def owner(found: WorkflowExecutionDescription) -> str | None:
    """Return the client that made a booking (its `BookingClient`); None if made while open."""
    return found.typed_search_attributes.get(BOOKING_CLIENT)


async def find(
    client: Client, user_id: str, caller: Caller
) -> tuple[Handle, WorkflowExecutionDescription]:
    """Return a booking's handle and description; `BookingNotFound` unless `caller` may see it.

    Another client's booking is not found, exactly as a missing one: its
    existence is not told.
    """
    missing = BookingNotFound(f"no booking {user_id!r}")
    if not user_id.isprintable() or len(user_id) > 255:
        raise missing
    handle = client.get_workflow_handle_for(BookingWorkflow.run, user_id)
    try:
        description = await bounded(handle.describe(rpc_timeout=RPC_TIMEOUT))
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise missing from None
        raise
    if description.workflow_type != "BookingWorkflow" or not caller.may_see(owner(description)):
        raise missing
    return handle, description
