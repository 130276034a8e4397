"""Starting bookings: ids and Idempotency-Keys, starts whose answer was lost, the wait.

A booking's id (`user_id`) is chosen before its start is sent, so a start
whose answer was lost can be looked up and told apart from any other
booking at that id by the marker each start leaves in the memo.
"""

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import WorkflowExecutionDescription
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.access import Caller
from api.models import BookingRequest
from api.temporal import (
    Handle,
    KeyReused,
    Operations,
    Unavailable,
    bounded,
    owner,
    reaching_temporal,
)
from shared import DEFAULT_DEADLINE_SECONDS, BookingState, search_attributes_at_start
from workflows import BookingWorkflow

log = logging.getLogger("api.starting")

START_TIMEOUT = timedelta(seconds=5)
"""How long a booking's start may take, its lookup included, before the API answers 503."""

LOOKUP_TIMEOUT = timedelta(seconds=1)
"""Of that, the time kept to look a start up when its answer is lost."""

ID_TRIES = 5
"""New suffixes to try when a user_id is already taken (a 1 in 10^6 clash)."""

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


class _IdTaken(Exception):
    """The id drawn for a booking without a key is another booking's: draw again."""


def start_unknown(user_id: str) -> Unavailable:
    """Return the error for a start that Temporal did not confirm in time: it may have landed."""
    return Unavailable(
        f"Temporal did not confirm booking {user_id}; it may have started: follow "
        f"/bookings/{user_id} before booking again, or retry with an Idempotency-Key",
        user_id,
    )


@dataclass(frozen=True)
class Starting(Operations):
    """Starts bookings, and waits for their outcome."""

    new_user_id: Callable[[str], str]
    """Makes a booking id from the traveller's name (starter.generate_unique_username)."""
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
            except (WorkflowAlreadyStartedError, _IdTaken):
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
            log.info("user_id=%s still running, or Temporal unreachable: answering 202", handle.id)
        except RPCError as err:
            self.breaker.observe(err)
            log.info("user_id=%s: no result from Temporal (%r): answering 202", handle.id, err)
        return None

    async def _start_keyed(self, booking: BookingRequest, key: str, caller: Caller) -> Handle:
        """Start the booking the key names; a repeat (even a concurrent one) gets the same."""
        user_id, digest = keyed_user_id(key, caller.owner), fingerprint(booking)
        try:
            return await self._start(booking, user_id, caller, digest)
        except WorkflowAlreadyStartedError:
            pass
        handle = self.client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            found = await bounded(handle.describe(rpc_timeout=LOOKUP_TIMEOUT), LOOKUP_TIMEOUT)
        except (RPCError, TimeoutError) as err:
            raise start_unknown(user_id) from err  # it exists; name it, as a lost start does
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
        (the id was taken before): `KeyReused` with a key, else draw another id
        (this start cannot land there). Not found, or no answer: an attempt may
        still be on its way to Temporal, so the 503 (`start_unknown`) names the
        booking, to be followed (or retried with its Idempotency-Key) rather
        than booked anew.
        """
        handle = self.client.get_workflow_handle_for(BookingWorkflow.run, user_id)
        try:
            found = await bounded(handle.describe(rpc_timeout=LOOKUP_TIMEOUT), LOOKUP_TIMEOUT)
        except (RPCError, TimeoutError) as lookup:
            raise start_unknown(user_id) from lookup
        if await started_by(found, marker, caller):
            return handle
        if keyed:
            raise key_reused(found, caller)
        raise _IdTaken(user_id)


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


def keyed_user_id(key: str, client: str | None = None) -> str:
    """Return the user_id an Idempotency-Key names for a client (None: the API is open).

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
