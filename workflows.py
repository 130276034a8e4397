"""The booking saga: car, then hotel, then flight; undo in reverse on failure."""

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior
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
    from opentelemetry import trace

    from activities import BookingActivities
    from shared import (
        BOOKING_STATUS,
        MAX_NOTE_LENGTH,
        BookingState,
        BookVacationInput,
        Compensation,
        Leg,
        LegState,
        LegStatus,
        Outcome,
        Reservation,
        Resolution,
        RetryUndo,
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
default, about 2.5 minutes), after which the leg waits for a person: a
retry (`retry_undo`) gets a fresh set."""

VERSIONING = VersioningBehavior.PINNED
"""A booking runs to its end on the worker version it started on: a changed
saga is deployed as a new version while bookings run (docs/operating.md,
"Deploying a changed saga"). Versioned workers give it to every run; it is
not on the `workflow.defn`, which unversioned workers (the tests') refuse to run."""

STEP_TIMEOUT = timedelta(seconds=10)
"""Longest a single provider call may take before Temporal retries it."""

CANCELLED_BY_REQUEST = "cancelled by request"

WHAT_A_PERSON_CAN_DO = (
    "run the undo again once the provider is back (retry_undo), or, once it is released "
    'by other means, say so (resolve, with a note): docs/operating.md, "An undo that keeps failing"'
)


class Stopped(Exception):
    """The saga stopped a step, or started none; the message says why."""


class DecisionRefused(ApplicationError):
    """A person's decision that the saga cannot take now: the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, type="DecisionRefused", non_retryable=True)


# Plain classes, not dataclasses: the sandbox runs this module afresh for every
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


class Deadline:
    """The booking's deadline: a workflow timer, `seconds` after the booking started.

    Not the execution timeout, which would end the run without its undos.
    Counted from the booking's start, not from when a worker took it up.
    """

    __slots__ = ("passed", "reason", "timer")

    def __init__(self, seconds: int) -> None:
        self.reason = f"not booked within its deadline of {seconds} s"
        left = timedelta(seconds=seconds) - (workflow.now() - workflow.info().workflow_start_time)
        self.passed = left <= timedelta(0)
        self.timer = None if self.passed else asyncio.create_task(self._expire(left, seconds))

    async def _expire(self, left: timedelta, seconds: int) -> None:
        await workflow.sleep(left, summary=f"Deadline: booked within {seconds} s, or undone")
        self.passed = True

    def cancel(self) -> None:
        """Cancel the timer: the booking has ended before it."""
        if self.timer is not None:
            self.timer.cancel()


@workflow.defn
class BookingWorkflow:
    """Books a trip as a saga; the result says what was booked or undone."""

    @workflow.init
    def __init__(self, book_input: BookVacationInput) -> None:
        self._input = book_input
        self._retrying: dict[Leg, asyncio.Task[Compensation]] = {}
        """The retries that run, by leg: a second ask for one awaits the first."""
        self._state = BookingState(
            user_id=book_input.book_user_id,
            legs=[
                LegState(Leg.CAR, book_input.book_car_id),
                LegState(Leg.HOTEL, book_input.book_hotel_id),
                LegState(Leg.FLIGHT, book_input.book_flight_id),
            ],
        )

    @workflow.run
    async def run(self, book_input: BookVacationInput) -> BookingState:
        """Book each leg in turn; undo in reverse on a failure for good or a stop."""
        check_input(book_input)
        self._state.trace_id = current_trace_id()
        if workflow.info().typed_search_attributes.get(BOOKING_STATUS) != Outcome.BOOKING:
            self._set_outcome(Outcome.BOOKING)  # a start that did not say so itself
        registered: list[Step] = []
        deadline = Deadline(book_input.deadline_seconds)
        try:
            for step in STEPS:
                if deadline.passed:
                    raise Stopped(deadline.reason)  # no step starts past the deadline
                # Registered before the step runs: a step that took effect but
                # whose answer was lost (a timeout) must be undone too.
                registered.append(step)
                await self._book_in_time(step, book_input, deadline)
        except (ActivityError, Stopped) as err:
            deadline.cancel()
            # The step that failed, was stopped, or that the deadline kept from starting.
            self._record_failure(step.leg, summarize_error(err))
            await self._compensate(registered[::-1], book_input)
            if self._state.awaiting:
                await finish(asyncio.create_task(self._wait_for_a_person()), "waiting for a person")
            return self._finish(Outcome.CANCELLED)
        deadline.cancel()
        return self._finish(Outcome.CONFIRMED)

    async def _book_in_time(
        self, step: Step, book_input: BookVacationInput, deadline: Deadline
    ) -> None:
        """Run one step; at the deadline or a cancel request, stop it and raise `Stopped`.

        An answer that comes with the deadline, in the same workflow task,
        counts as in time: the condition is checked once every answer of the
        task is in. A stopped step's activity waits for the provider's answer
        (`_book`), so the step may still book: it is undone with the others.
        """
        booking = asyncio.create_task(self._book(step, book_input))
        try:
            await workflow.wait_condition(lambda: booking.done() or deadline.passed)
        except asyncio.CancelledError:
            reason = CANCELLED_BY_REQUEST
        else:
            if booking.done():
                await booking  # its answer: booked, or the error that failed the step
                return
            reason = deadline.reason
        booking.cancel()
        # Whatever the step answers, what stopped it is the reason.
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await finish(booking, "stopping a step")
        raise Stopped(reason)

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

    def _record_failure(self, leg: Leg, reason: str) -> None:
        self._set_outcome(Outcome.COMPENSATING)
        self._state.failed_leg = leg
        self._state.reason = reason
        state = self._state.leg(leg)
        if state.status is LegStatus.PENDING:  # a stopped step may have booked
            state.status = LegStatus.FAILED
            state.error = reason
        self._transition("failed", leg, reason=reason)

    async def _compensate(self, steps: list[Step], book_input: BookVacationInput) -> None:
        """Run the undos of `steps`, in that order, to the end; time them."""
        failed_at = workflow.now()
        failed = {
            "booking.id": self._state.user_id,
            "booking.failed_leg": str(self._state.failed_leg),
        }
        # One span over the undos, each undo's under it (the undos' tasks copy its context).
        with trace.get_tracer(__name__).start_as_current_span("compensation", attributes=failed):
            # A cancel request that arrives while undoing (the booking already being
            # rolled back) must not end the workflow with undos left unrun.
            await finish(asyncio.create_task(self._undo_all(steps, book_input)), "undoing")
        meter = workflow.metric_meter()
        meter.create_histogram_timedelta(
            "saga_compensation_duration", "from the first failure to the last undo", "ms"
        ).record(workflow.now() - failed_at)

    async def _undo_all(self, steps: list[Step], book_input: BookVacationInput) -> None:
        if book_input.parallel_undo:
            await asyncio.gather(*(self._undo(step, book_input) for step in steps))
        else:
            for step in steps:
                await self._undo(step, book_input)

    async def _undo(self, step: Step, book_input: BookVacationInput) -> None:
        compensation = await self._run_undo(step, book_input, f"Undo {step.leg} booking")
        self._state.compensations.append(compensation)
        self._transition(f"undo {compensation.outcome}", step.leg, error=compensation.error)

    async def _run_undo(
        self, step: Step, book_input: BookVacationInput, summary: str
    ) -> Compensation:
        """Run one leg's undo in a span of its own; return what it did, and count it."""
        leg = self._state.leg(step.leg)
        held = leg.reservation_id or "its step did not complete"
        attributes = {"booking.id": self._state.user_id, "booking.leg": step.leg.value}
        if leg.reservation_id:
            attributes["booking.reservation"] = leg.reservation_id
        with trace.get_tracer(__name__).start_as_current_span(
            f"undo {step.leg}", attributes=attributes
        ) as span:
            compensation = await self._undo_attempts(step, book_input, f"{summary} ({held})")
            span.set_attribute("booking.outcome", compensation.outcome.value)
        workflow.metric_meter().create_counter(
            "saga_compensations", "undos run, by leg and outcome"
        ).add(1, {"leg": step.leg.value, "outcome": compensation.outcome.value})
        return compensation

    async def _undo_attempts(
        self, step: Step, book_input: BookVacationInput, summary: str
    ) -> Compensation:
        """Run one leg's undo activity, with its attempts; return what it did."""
        try:
            report = await workflow.execute_activity_method(
                step.undo,
                book_input,
                summary=summary,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=dataclasses.replace(
                    UNDO_RETRY, maximum_attempts=book_input.undo_attempts
                ),
            )
        except ActivityError as err:
            # Keep going: one stuck undo must not leave the others held.
            error = summarize_error(err)
            return Compensation(step.leg, UndoOutcome.NEEDS_ATTENTION, error, since=workflow.now())
        outcome = UndoOutcome.RELEASED if report.released else UndoOutcome.NOTHING_TO_UNDO
        return Compensation(step.leg, outcome)

    async def _wait_for_a_person(self) -> None:
        """Wait until a person has decided every leg that needs attention, reminding meanwhile.

        The reminder is a workflow timer: it survives restarts of every
        process, and comes again every `reminder_seconds` for as long as it takes.
        """
        self._set_outcome(Outcome.NEEDS_ATTENTION)
        self._transition(Outcome.NEEDS_ATTENTION.value, waiting_for=self._awaited_legs())
        every = timedelta(seconds=self._input.reminder_seconds)
        while self._state.awaiting:
            try:
                await workflow.wait_condition(
                    lambda: not self._state.awaiting,
                    timeout=every,
                    timeout_summary=f"Reminder: waits for a person ({self._awaited_legs()})",
                )
            except asyncio.TimeoutError:  # noqa: UP041 (TimeoutError here is Temporal's)
                self._remind()
            except asyncio.CancelledError:
                # A cancel request: the booking is undone already, but for what
                # waits for a person, so it waits on (see `finish` too).
                workflow.logger.info("Cancel requested while waiting for a person: waiting on")
        # A decision's update answers before the booking completes.
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _awaited_legs(self) -> str:
        return ", ".join(c.leg for c in self._state.awaiting)

    def _remind(self) -> None:
        workflow.metric_meter().create_counter(
            "saga_attention_reminders", "reminders of bookings that wait for a person"
        ).add(1)
        for waiting in self._state.awaiting:
            since = waiting.since or workflow.now()
            self._transition(
                "still needs attention",
                waiting.leg,
                waiting=str(workflow.now() - since).split(".")[0],
                error=waiting.error,
            )

    @workflow.update
    async def retry_undo(self, ask: RetryUndo) -> Compensation:
        """Run a leg's undo again, with a fresh set of attempts; return what it did.

        Asked again while it runs, the same retry answers both; asked again
        after it released the leg, it answers what it did then.
        """
        running = self._retrying.get(ask.leg)
        if running is None:
            earlier = self._state.undo_of(ask.leg)
            if earlier is None or earlier.outcome is not UndoOutcome.NEEDS_ATTENTION:
                return self._decided(ask.leg)
            running = asyncio.create_task(self._retry(ask, earlier))
            self._retrying[ask.leg] = running
        return await running

    async def _retry(self, ask: RetryUndo, earlier: Compensation) -> Compensation:
        step = next(step for step in STEPS if step.leg is ask.leg)
        try:
            tried = await self._run_undo(
                step, self._input, f"Retry {ask.leg} undo, asked by {ask.by}"
            )
        finally:
            del self._retrying[ask.leg]
        retried = dataclasses.replace(earlier, retries=earlier.retries + 1)
        if tried.outcome is UndoOutcome.NEEDS_ATTENTION:
            retried = dataclasses.replace(retried, error=tried.error)
        else:
            retried = dataclasses.replace(
                retried, outcome=tried.outcome, error=None, decided_by=ask.by
            )
        self._record_decision(retried, f"retried undo {tried.outcome}", by=ask.by)
        return retried

    @retry_undo.validator
    def _may_retry_undo(self, ask: RetryUndo) -> None:
        self._check_decision(
            ask.leg, ask.by, repeats={UndoOutcome.RELEASED, UndoOutcome.NOTHING_TO_UNDO}
        )

    @workflow.update
    def resolve(self, decision: Resolution) -> Compensation:
        """Record that a person released a leg by other means, with their note."""
        earlier = self._state.undo_of(decision.leg)
        if earlier is None or earlier.outcome is not UndoOutcome.NEEDS_ATTENTION:
            return self._decided(decision.leg)
        resolved = dataclasses.replace(
            earlier, outcome=UndoOutcome.RESOLVED, decided_by=decision.by, note=decision.note
        )
        self._record_decision(resolved, "resolved by hand", by=decision.by, note=decision.note)
        return resolved

    @resolve.validator
    def _may_resolve(self, decision: Resolution) -> None:
        if self._check_decision(decision.leg, decision.by, repeats={UndoOutcome.RESOLVED}):
            return
        if decision.leg in self._retrying:
            raise DecisionRefused(f"the {decision.leg}'s undo is being retried: await its answer")
        note = decision.note.strip()
        if not note or len(decision.note) > MAX_NOTE_LENGTH or not note.isprintable():
            raise DecisionRefused(
                f"the note must say how it was released, in 1 to {MAX_NOTE_LENGTH} "
                "printable characters"
            )

    def _check_decision(self, leg: Leg, by: str, repeats: set[UndoOutcome]) -> bool:
        """Refuse a decision that cannot be taken now; return whether it repeats one that was.

        A refusal records nothing: Temporal leaves a rejected update out of the
        history. An unknown leg is refused before this, as arguments that do not decode.
        """
        if not by.strip() or not by.isprintable() or len(by) > 100:
            raise DecisionRefused("say who decides: 1 to 100 printable characters")
        undo = self._state.undo_of(leg)
        if undo is not None and undo.decided_by is not None and undo.outcome in repeats:
            return True  # a repeat: it answers what it did the first time
        if self._state.outcome is not Outcome.NEEDS_ATTENTION:
            raise DecisionRefused(
                f"booking {self._state.user_id} is not waiting for a decision: "
                f"it is {self._state.outcome}"
            )
        if undo is None or undo.outcome is not UndoOutcome.NEEDS_ATTENTION:
            done = f"its undo: {undo.outcome}" if undo else "it had nothing to undo"
            raise DecisionRefused(f"the {leg} does not need attention ({done})")
        return False

    def _decided(self, leg: Leg) -> Compensation:
        """Return a leg's compensation as its decision left it (a repeat's answer)."""
        undo = self._state.undo_of(leg)
        if undo is None:  # unreachable past the validator, which runs first
            raise ApplicationError(f"the {leg} has no undo to decide", type="NotDecidable")
        return undo

    def _record_decision(self, compensation: Compensation, event: str, **fields: object) -> None:
        undos = self._state.compensations
        undos[next(i for i, c in enumerate(undos) if c.leg == compensation.leg)] = compensation
        self._transition(event, compensation.leg, error=compensation.error, **fields)

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
        (workflow.logger.error if event in TOLD_AS_ERRORS else workflow.logger.info)(line)
        workflow.set_current_details(details(self._state))


TOLD_AS_ERRORS = {
    f"undo {UndoOutcome.NEEDS_ATTENTION}",
    Outcome.NEEDS_ATTENTION.value,
    "still needs attention",
    f"retried undo {UndoOutcome.NEEDS_ATTENTION}",
}
"""The transitions that a person must act on: logged as errors."""


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
    for waiting in state.awaiting:
        held = state.leg(waiting.leg).reservation_id or "maybe held"
        since = f"{waiting.since:%Y-%m-%d %H:%M:%S} UTC" if waiting.since else "now"
        lines.append(
            f"\n**Needs attention since {since}**: the {waiting.leg} ({held}), {waiting.error}. "
            f"A person can {WHAT_A_PERSON_CAN_DO}."
        )
    for decided in state.compensations:
        if decided.outcome is UndoOutcome.RESOLVED:
            lines.append(
                f"\nThe {decided.leg} was resolved by {decided.decided_by}: {decided.note}"
            )
    return "\n".join(lines)


async def finish(task: "asyncio.Task[None]", doing: str) -> None:
    """Await `task` to its end, whatever cancel requests come meanwhile; raise what it raised.

    Stopping the step in flight and undoing are how the saga answers a cancel
    request: none may cut them short. Then each request is answered, and
    uncounted, so that a later `asyncio.timeout` or `TaskGroup` ignores it.
    """
    while not task.done():
        try:
            await workflow.wait([task])  # unlike `shield`, never cancels or raises for `task`
        except asyncio.CancelledError:
            workflow.logger.info("Cancel requested while %s: finishing that first", doing)
    current = asyncio.current_task()
    while current is not None and current.cancelling():
        current.uncancel()
    task.result()


def current_trace_id() -> str:
    """Return the trace this run continues (its caller's, through the SDK's plugin), or empty."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def check_input(book_input: BookVacationInput) -> None:
    """Refuse, for good, an input no retry policy or timer can honour (the API checks it too)."""
    for name in ("attempts", "undo_attempts", "deadline_seconds", "reminder_seconds"):
        if getattr(book_input, name) < 1:
            raise ApplicationError(
                f"{name} must be at least 1", type="InvalidInput", non_retryable=True
            )


def summarize_error(err: Exception) -> str:
    """Say in a sentence why a step failed for good, was stopped, or an undo failed."""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, CancelledError):
        return CANCELLED_BY_REQUEST
    if isinstance(cause, TimeoutError):
        return "timed out"
    message = cause.message if isinstance(cause, FailureError) else str(cause)
    if isinstance(err, ActivityError) and err.retry_state is RetryState.MAXIMUM_ATTEMPTS_REACHED:
        return f"{message} (no attempts left)"
    return message
