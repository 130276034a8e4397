"""How a booking is shown: a `BookingState` as the documented JSON, and lists of them."""

import base64

from flask import Response, jsonify, url_for
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus

from api.following import BookingPage, ListedBooking
from api.models import (
    Actions,
    BookingAccepted,
    BookingList,
    BookingSummary,
    BookingView,
    Decided,
    LegView,
    StatusName,
    TripBooked,
    TripCancelled,
    TripResult,
    UndoDone,
)
from shared import BookingState, Compensation, Leg, Outcome, UndoOutcome

ENDED_WITHOUT_RESULT: dict[WorkflowExecutionStatus | None, StatusName] = {
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
    WorkflowExecutionStatus.CANCELED: "cancelled",
}
"""How a booking that ended without a result shows; anything else is "failed"."""

FINAL = {Outcome.CONFIRMED, Outcome.CANCELLED}

SAGA_REPORTS = {WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED}
"""Runs whose status the saga itself keeps (`BookingStatus`); others ended without it."""


def trip_result(state: BookingState) -> TripResult:
    """Return the tutorial's JSON for a finished booking, plus the details."""
    if state.cancelled:
        return TripCancelled(
            user_id=state.user_id,
            cancelled=True,
            result="Voyage cancelled",
            reason=state.reason,
            failed_step=state.failed_leg,
            compensations=[undo_done(c) for c in state.compensations],
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


def trip_answer(state: BookingState) -> Response:
    """Return the trip's outcome as `POST /book` answers it, with its trace id if traced."""
    response = send(trip_result(state))
    if state.trace_id:
        response.headers["Trace-Id"] = state.trace_id
    return response


def undo_done(undo: Compensation) -> UndoDone:
    """Return one leg's compensation as the JSON shows it: a person's part only if they had one."""
    return UndoDone(
        step=undo.leg,
        outcome=undo.outcome,
        error=undo.error,
        needs_attention_since=undo.since,
        retries=undo.retries or None,
        decided_by=undo.decided_by,
        note=undo.note,
    )


def actions(user_id: str, leg: Leg) -> Actions:
    """Return the URLs of the decisions an operator can make about a leg."""
    return Actions(
        retry_undo=url_for("bookings.retry_undo", user_id=user_id, leg=leg.value),
        resolve=url_for("bookings.resolve", user_id=user_id, leg=leg.value),
    )


def decided_view(user_id: str, undo: Compensation) -> Decided:
    """Return what a person's decision did to a leg."""
    status_url = url_for("bookings.get_booking", user_id=user_id)
    return Decided(user_id=user_id, status_url=status_url, undo=undo_done(undo))


def decision_answer(
    user_id: str, undo: Compensation | None
) -> Response | tuple[Response, int, dict[str, str]]:
    """Return what a decision did (200), or a 202 to follow the booking while it runs on."""
    return send(decided_view(user_id, undo)) if undo is not None else accepted(user_id)


def status_view(state: BookingState, *, may_decide: bool = True) -> BookingView:
    """Return a booking's state as `GET /bookings/<id>` shows it.

    The result is shown as soon as the outcome is final, which the progress
    query can report a moment before the workflow has closed. `may_decide`:
    the caller may take a leg's decisions, so each waiting leg shows them.
    """
    undone = {c.leg: c for c in state.compensations}
    legs = {}
    for leg in state.legs:
        undo = undone.get(leg.leg)
        waits = (
            may_decide
            and state.outcome is Outcome.NEEDS_ATTENTION
            and undo is not None
            and undo.outcome is UndoOutcome.NEEDS_ATTENTION
        )
        legs[leg.leg] = LegView(
            item=leg.item_id,
            state=undo.outcome.value if undo else leg.status.value,
            reservation_id=leg.reservation_id,
            error=undo.error if undo else leg.error,
            needs_attention_since=undo.since if undo else None,
            actions=actions(state.user_id, leg.leg) if waits else None,
        )
    return BookingView(
        user_id=state.user_id,
        status=state.outcome.value,
        legs=legs,
        result=trip_result(state) if state.outcome in FINAL else None,
        trace_id=state.trace_id or None,
    )


def ended_view(user_id: str, status: WorkflowExecutionStatus | None) -> BookingView:
    """Return a booking that ended without a result (terminated, say) as the status shows it."""
    return BookingView(user_id=user_id, status=ENDED_WITHOUT_RESULT.get(status, "failed"))


def listing_view(page: BookingPage) -> BookingList:
    """Return a page of bookings as `GET /bookings` shows it."""
    token = page.next_page_token
    return BookingList(
        bookings=[summary_view(booking) for booking in page.bookings],
        # Read back by api.inputs.page_token.
        next_page_token=base64.urlsafe_b64encode(token).decode().rstrip("=") if token else None,
    )


def summary_view(booking: ListedBooking) -> BookingSummary:
    """Return one listed booking: where its saga stands, or how its run ended without it."""
    status: StatusName | None
    if booking.status in SAGA_REPORTS:
        status = booking.outcome.value if booking.outcome else None
    else:
        status = ENDED_WITHOUT_RESULT.get(booking.status, "failed")
    return BookingSummary(
        user_id=booking.user_id,
        status=status,
        customer=booking.customer,
        started_at=booking.started_at,
    )


def accepted(user_id: str) -> tuple[Response, int, dict[str, str]]:
    """Return a 202 pointing at the booking's status."""
    status_url = url_for("bookings.get_booking", user_id=user_id)
    body = BookingAccepted(user_id=user_id, status="in progress", status_url=status_url)
    return send(body), 202, {"Location": status_url}


def send(model: BaseModel) -> Response:
    """Return a model as JSON, leaving out fields it does not have."""
    return jsonify(model.model_dump(mode="json", exclude_none=True))
