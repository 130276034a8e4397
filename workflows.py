"""The booking saga: car, then hotel, then flight; undo in reverse on failure."""

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    RetryState,
    TimeoutError,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities import BookingActivities
    from shared import (
        BOOKING_STATUS,
        BookingState,
        BookVacationInput,
        Compensation,
        Leg,
        LegState,
        LegStatus,
        Outcome,
        Reservation,
        UndoOutcome,
        UndoReport,
        log_line,
    )

BOOKING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)
"""Car and hotel: back off from 1 s. The input sets the attempts; rejections
are raised non-retryable by the activities, so they are never retried."""

FLIGHT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=1),
)
"""Flight: retry every second, as the tutorial does."""

UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
)
"""Undos: back off from 1 s to every 30 s; the input sets the attempts (10 by
default, about 2.5 minutes), after which the leg is left for a person."""

STEP_TIMEOUT = timedelta(seconds=10)
"""Longest a single provider call may take before Temporal retries it."""

T = TypeVar("T")

CANCELLED_BY_REQUEST = "cancelled by request"


# A plain class, not a dataclass: the sandbox runs this module afresh for every
# booking, and generating a dataclass was a quarter of that (about 0.4 ms a run).
class Step:
    """One saga step: the booking activity, its undo and its retry policy."""

    __slots__ = ("book", "leg", "retry", "undo")

    def __init__(
        self,
        leg: Leg,
        book: Callable[[BookingActivities, BookVacationInput], Awaitable[Reservation]],
        undo: Callable[[BookingActivities, BookVacationInput], Awaitable[UndoReport]],
        retry: RetryPolicy,
    ) -> None:
        self.leg = leg
        self.book = book
        self.undo = undo
        self.retry = retry


STEPS = (
    Step(Leg.CAR, BookingActivities.book_car, BookingActivities.undo_book_car, BOOKING_RETRY),
    Step(Leg.HOTEL, BookingActivities.book_hotel, BookingActivities.undo_book_hotel, BOOKING_RETRY),
    Step(
        Leg.FLIGHT, BookingActivities.book_flight, BookingActivities.undo_book_flight, FLIGHT_RETRY
    ),
)


@workflow.defn
class BookingWorkflow:
    """Books a trip as a saga; the result says what was booked or undone."""

    @workflow.init
    def __init__(self, book_input: BookVacationInput) -> None:
        self._state = BookingState(
            user_id=book_input.book_user_id,
            legs=[
                LegState(Leg.CAR, book_input.book_car_id),
                LegState(Leg.HOTEL, book_input.book_hotel_id),
                LegState(Leg.FLIGHT, book_input.book_flight_id),
            ],
        )
        self._missed_deadline: str | None = None
        """The deadline's reason, once it has passed."""
        self._stop_reason: str | None = None
        """Why the saga stopped a step, or started none, when it decided to."""

    @workflow.run
    async def run(self, book_input: BookVacationInput) -> BookingState:
        """Book each leg in turn; undo in reverse on a failure for good or at the deadline."""
        check_input(book_input)
        if workflow.info().typed_search_attributes.get(BOOKING_STATUS) != Outcome.BOOKING:
            self._set_outcome(Outcome.BOOKING)  # a start that did not say so itself
        registered: list[Step] = []
        deadline = self._start_deadline(book_input.deadline_seconds)
        try:
            for step in STEPS:
                if self._missed_deadline:
                    self._stop_reason = self._missed_deadline
                    raise asyncio.CancelledError  # no step starts past the deadline
                # Registered before the step runs: a step that took effect but
                # whose answer was lost (a timeout) must be undone too.
                registered.append(step)
                await self._book_in_time(step, book_input)
        except (ActivityError, asyncio.CancelledError) as err:
            if deadline is not None:
                deadline.cancel()
            # The step that failed, or that the deadline kept from starting.
            self._record_failure(step.leg, err)
            failed_at = workflow.now()
            await self._compensate_to_the_end(registered[::-1], book_input)
            meter = workflow.metric_meter()
            meter.create_histogram_timedelta(
                "saga_compensation_duration", "from the first failure to the last undo", "ms"
            ).record(workflow.now() - failed_at)
            return self._finish(Outcome.CANCELLED)
        if deadline is not None:
            deadline.cancel()
        return self._finish(Outcome.CONFIRMED)

    def _start_deadline(self, seconds: int) -> "asyncio.Task[None] | None":
        """Start the timer of the booking's deadline: `seconds` after the booking started.

        A workflow timer, not the execution timeout, which would end the run
        without its undos. When it fires it only says so (`_missed_deadline`);
        `_book_in_time` stops the step in flight. Counted from the booking's
        start, not from when a worker took it up: if that is past the
        deadline already, no timer starts and no step runs.
        """
        reason = f"not booked within its deadline of {seconds} s"
        left = timedelta(seconds=seconds) - (workflow.now() - workflow.info().workflow_start_time)
        if left <= timedelta(0):
            self._missed_deadline = reason
            return None

        async def deadline() -> None:
            await workflow.sleep(left, summary=f"Deadline: booked within {seconds} s, or undone")
            self._missed_deadline = reason

        return asyncio.create_task(deadline())

    async def _book_in_time(self, step: Step, book_input: BookVacationInput) -> None:
        """Run one step; at the deadline or a cancel request, stop it and raise CancelledError.

        An answer that comes with the deadline, in the same workflow task,
        counts as in time: the condition is checked once every answer of the
        task is in.
        """
        booking = asyncio.create_task(self._book(step, book_input))
        try:
            await workflow.wait_condition(lambda: booking.done() or bool(self._missed_deadline))
        except asyncio.CancelledError:
            cancel_request_handled()
            self._stop_reason = CANCELLED_BY_REQUEST
            await stopped(booking)
        if not booking.done():
            self._stop_reason = self._missed_deadline
            await stopped(booking)
        await booking  # its answer: the reservation, or the error that failed the step

    @workflow.query
    def progress(self) -> BookingState:
        """Return each leg's state and the undos run so far."""
        return self._state

    async def _book(self, step: Step, book_input: BookVacationInput) -> None:
        leg = self._state.leg(step.leg)
        self._transition("booking", step.leg)
        reservation = await workflow.execute_activity_method(
            step.book,
            book_input,
            summary=f"Book {step.leg} {leg.item_id}",
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=dataclasses.replace(step.retry, maximum_attempts=book_input.attempts),
            # On cancellation, wait for the provider's answer: undoing while the
            # call is still in flight would find nothing, then the call would book.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        leg.status = LegStatus.BOOKED
        leg.reservation_id = reservation.reservation_id
        self._transition("booked", step.leg, reservation=reservation.reservation_id)

    def _record_failure(self, leg: Leg, err: BaseException) -> None:
        self._set_outcome(Outcome.COMPENSATING)
        self._state.failed_leg = leg
        self._state.reason = self._stop_reason or describe(err)
        state = self._state.leg(leg)
        if state.status is LegStatus.PENDING:  # a stopped step may have booked
            state.status = LegStatus.FAILED
            state.error = self._state.reason
        self._transition("failed", leg, reason=self._state.reason)

    async def _compensate_to_the_end(
        self, steps: list[Step], book_input: BookVacationInput
    ) -> None:
        # The undos run in a task of their own, shielded, and awaited until done:
        # a cancel request that arrives while undoing (the booking already being
        # rolled back) must not end the workflow with undos left unrun.
        await to_the_end(asyncio.create_task(self._compensate(steps, book_input)), "undoing")

    async def _compensate(self, steps: list[Step], book_input: BookVacationInput) -> None:
        if book_input.parallel_undo:
            await asyncio.gather(*(self._undo(step, book_input) for step in steps))
        else:
            for step in steps:
                await self._undo(step, book_input)

    async def _undo(self, step: Step, book_input: BookVacationInput) -> None:
        leg = self._state.leg(step.leg)
        held = leg.reservation_id or "its step did not complete"
        try:
            report = await workflow.execute_activity_method(
                step.undo,
                book_input,
                summary=f"Undo {step.leg} booking ({held})",
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=dataclasses.replace(
                    UNDO_RETRY, maximum_attempts=book_input.undo_attempts
                ),
            )
        except ActivityError as err:
            # Keep going: one stuck undo must not leave the others held.
            compensation = Compensation(step.leg, UndoOutcome.NEEDS_ATTENTION, describe(err))
        else:
            outcome = UndoOutcome.RELEASED if report.released else UndoOutcome.NOTHING_TO_UNDO
            compensation = Compensation(step.leg, outcome)
        self._state.compensations.append(compensation)
        workflow.metric_meter().create_counter(
            "saga_compensations", "undos run, by leg and outcome"
        ).add(1, {"leg": step.leg.value, "outcome": compensation.outcome.value})
        self._transition(f"undo {compensation.outcome}", step.leg, error=compensation.error)

    def _set_outcome(self, outcome: Outcome) -> None:
        """Move the booking on, and say so to Temporal's visibility (`BookingStatus`)."""
        self._state.outcome = outcome
        workflow.upsert_search_attributes([BOOKING_STATUS.value_set(outcome.value)])

    def _finish(self, outcome: Outcome) -> BookingState:
        self._set_outcome(outcome)
        workflow.metric_meter().create_counter("saga_bookings", "bookings ended, by outcome").add(
            1, {"outcome": outcome.value}
        )
        self._transition(outcome.value)
        return self._state

    def _transition(self, event: str, leg: Leg | None = None, **fields: object) -> None:
        """Log one saga transition, and show the saga's state in the Web UI."""
        line = log_line(event.replace(" ", "-"), self._state.user_id, leg, **fields)
        needs_attention = event == f"undo {UndoOutcome.NEEDS_ATTENTION}"
        (workflow.logger.error if needs_attention else workflow.logger.info)(line)
        workflow.set_current_details(details(self._state))


def details(state: BookingState) -> str:
    """Return the saga's state as the Web UI shows it (Temporal markdown)."""
    lines = [f"**{state.outcome.capitalize()}**"]
    for leg in state.legs:
        shown = f" ({leg.reservation_id})" if leg.reservation_id else ""
        lines.append(f"- {leg.leg.capitalize()} {leg.item_id}: {leg.status}{shown}")
    if state.reason:
        lines.append(f"\nStopped at the {state.failed_leg}: {state.reason}")
    if state.compensations:
        undone = ", ".join(f"{c.leg} ({c.outcome})" for c in state.compensations)
        lines.append(f"\nUndone: {undone}")
    return "\n".join(lines)


async def stopped(step: "asyncio.Task[None]") -> NoReturn:
    """Ask a step in flight to stop, await its answer, then raise CancelledError.

    The step's activity waits for the provider's answer (`_book`), so the step
    may still book: it is undone with the others whatever it answered.
    """
    step.cancel()
    await to_the_end(step, "stopping a step")
    raise asyncio.CancelledError


async def to_the_end(task: "asyncio.Task[T]", doing: str) -> T:
    """Await `task` to its end, whatever cancel requests come meanwhile; return its result.

    A cancel request while undoing, or while a step is being stopped, must not
    end the workflow with that work unfinished: it is noted, not passed on.
    """
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                cancel_request_handled()
                workflow.logger.info("Cancel requested while %s: finishing that first", doing)
    return task.result()


def cancel_request_handled() -> None:
    """Say that the current task has dealt with the cancel request it was sent.

    Its count of pending cancellations goes back down, so that an
    `asyncio.timeout` or `TaskGroup` later in the run does not mistake the
    request for its own.
    """
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def check_input(book_input: BookVacationInput) -> None:
    """Refuse, for good, an input no retry policy or timer can honour (the API checks it too)."""
    for name in ("attempts", "undo_attempts", "deadline_seconds"):
        if getattr(book_input, name) < 1:
            raise ApplicationError(
                f"{name} must be at least 1", type="InvalidInput", non_retryable=True
            )


def describe(err: BaseException) -> str:
    """Say in a sentence why a step failed for good."""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, asyncio.CancelledError | CancelledError):
        return CANCELLED_BY_REQUEST
    if isinstance(cause, TimeoutError):
        return "timed out"
    message = cause.message if isinstance(cause, FailureError) else str(cause)
    if isinstance(err, ActivityError) and err.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return f"{message} (no attempts left)"
    return message
