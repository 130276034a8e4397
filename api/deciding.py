"""A person's decisions on a leg whose undo keeps failing: run it again, or resolve it by hand.

Each is a Workflow Update of the booking (`BookingWorkflow.retry_undo`,
`BookingWorkflow.resolve`), which the saga validates before it takes it: a
refused decision is a `DecisionRefused` with the saga's reason, and leaves
nothing in the booking's history.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateHandle,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.service import RPCError, RPCStatusCode

from api.access import Caller
from api.temporal import (
    RPC_TIMEOUT,
    BookingEnded,
    DecisionRefused,
    Handle,
    Operations,
    Unavailable,
    bounded,
    find,
    reaching_temporal,
)
from shared import Compensation, Leg, Resolution, RetryUndo, UndoOutcome
from workflows import BookingWorkflow

ACCEPT_WAIT = timedelta(seconds=5)
"""How long a worker may take to take a decision up (validate it, and accept it)."""

DECISION_WAIT = timedelta(seconds=15)
"""How long a request waits for a retried undo's answer (an undo's attempts may take
minutes): past it, the retry goes on and the answer says where to follow it. With the
look at the booking and `ACCEPT_WAIT`, under the shortest request timeout (30 s)."""

CUT_SHORT = (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError)
"""How a wait on an update ends when it takes too long."""

NOT_TAKEN_UP = (
    "no worker took the decision up yet: Temporal keeps it, and it applies once a worker "
    "does; asking again is safe"
)

ANONYMOUS_DECIDER = "anonymous"
"""Who decided, as recorded while the API takes no keys."""

RETRY_REPEATS = {UndoOutcome.RELEASED, UndoOutcome.NOTHING_TO_UNDO}
RESOLVE_REPEATS = {UndoOutcome.RESOLVED}
"""How a leg stands after each decision: asked again, the decision answers as it did."""


@dataclass(frozen=True)
class Deciding(Operations):
    """Takes an operator's decision on a booking's leg to the saga, and brings back what it did."""

    accept_wait: timedelta = ACCEPT_WAIT
    decision_wait: timedelta = DECISION_WAIT

    @reaching_temporal
    async def retry_undo(self, user_id: str, leg: Leg, caller: Caller) -> Compensation | None:
        """Run a leg's undo again; return what it did (None: it runs past `decision_wait`)."""
        retry = RetryUndo(leg, decider(caller))
        return await self._decide(user_id, caller, BookingWorkflow.retry_undo, retry, RETRY_REPEATS)

    @reaching_temporal
    async def resolve(
        self, user_id: str, leg: Leg, note: str, caller: Caller
    ) -> Compensation | None:
        """Record that a leg was released by other means; return the leg's compensation."""
        resolution = Resolution(leg, note, decider(caller))
        return await self._decide(
            user_id, caller, BookingWorkflow.resolve, resolution, RESOLVE_REPEATS
        )

    async def _decide(
        self,
        user_id: str,
        caller: Caller,
        update: Any,
        decision: RetryUndo | Resolution,
        repeats: Collection[UndoOutcome],
    ) -> Compensation | None:
        handle, found = await find(self.client, user_id, caller)
        status = found.status
        if status == WorkflowExecutionStatus.RUNNING:
            try:
                return await self._ask(handle, update, decision)
            except WorkflowUpdateFailedError as err:  # refused by the saga's validator
                raise DecisionRefused(reason(err), user_id) from None
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            # It ended since we looked: how?
            status = (await bounded(handle.describe(rpc_timeout=RPC_TIMEOUT))).status
        if status != WorkflowExecutionStatus.COMPLETED:
            raise BookingEnded(f"booking {handle.id} has ended without a result", handle.id)
        return await self._after_the_end(handle, decision, repeats)

    async def _ask(
        self, handle: Handle, update: Any, decision: RetryUndo | Resolution
    ) -> Compensation | None:
        """Take a decision to the saga; return what it did (None: it still runs).

        A wait cut short ends in the SDK's own error, whether by its
        `rpc_timeout` or by `bounded` (which also bounds a connection retried).
        """
        try:
            started: WorkflowUpdateHandle[Compensation] = await bounded(
                handle.start_update(
                    update,
                    decision,
                    wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                    rpc_timeout=self.accept_wait,
                ),
                self.accept_wait,
            )
        except CUT_SHORT:
            raise Unavailable(NOT_TAKEN_UP) from None  # no worker, or none in time
        try:
            return await bounded(started.result(rpc_timeout=self.decision_wait), self.decision_wait)
        except CUT_SHORT:
            return None  # it runs on

    async def _after_the_end(
        self, handle: Handle, decision: RetryUndo | Resolution, repeats: Collection[UndoOutcome]
    ) -> Compensation:
        """Answer a decision on a booking that has completed: a repeat answers as it did then."""
        result = await bounded(handle.result())
        undo = result.undo_of(decision.leg)
        if undo is not None and undo.decided_by is not None and undo.outcome in repeats:
            return undo
        raise DecisionRefused(
            f"booking {handle.id} is not waiting for a decision: it is {result.outcome}", handle.id
        )


def decider(caller: Caller) -> str:
    """Return who decides, as the booking records it: the operator's key's name."""
    return caller.name or ANONYMOUS_DECIDER


def reason(err: WorkflowUpdateFailedError) -> str:
    """Return the saga's reason for refusing a decision."""
    cause = err.cause
    return str(getattr(cause, "message", None) or cause or err)
