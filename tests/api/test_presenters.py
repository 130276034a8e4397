"""`api/presenters.py`: a booking's state as the documented JSON."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask
from temporalio.client import WorkflowExecutionStatus

from api.following import BookingPage, ListedBooking
from api.presenters import listing_view, status_view, summary_view
from shared import BookingState, Compensation, Leg, LegState, Outcome, UndoOutcome


@pytest.mark.parametrize("outcome", list(Outcome))
def test_status_shows_the_result_exactly_when_the_outcome_is_final(outcome: Outcome) -> None:
    # The progress query may report a final outcome a moment before the workflow closes.
    state = BookingState("jane-smith-000001", [LegState(leg, f"{leg}-id") for leg in Leg], outcome)

    view = status_view(state)

    assert view.status == outcome.value
    assert (view.result is not None) == (outcome in (Outcome.CONFIRMED, Outcome.CANCELLED))


def awaiting_car(outcome: Outcome) -> BookingState:
    """Jane's booking whose car's undo needs attention, as the saga says it stands."""
    state = BookingState("jane-smith-000001", [LegState(leg, f"{leg}-id") for leg in Leg], outcome)
    state.compensations = [Compensation(Leg.CAR, UndoOutcome.NEEDS_ATTENTION, "down")]
    return state


@pytest.mark.parametrize(
    ("outcome", "may_decide", "shown"),
    [
        pytest.param(Outcome.NEEDS_ATTENTION, True, True, id="waiting_to_an_operator"),
        pytest.param(Outcome.NEEDS_ATTENTION, False, False, id="waiting_to_its_client"),
        pytest.param(Outcome.CANCELLED, True, False, id="left_by_an_older_version"),
    ],
)
def test_a_leg_that_needs_attention_shows_its_decisions_only_where_they_can_be_taken(
    make_app: Callable[..., Flask], outcome: Outcome, may_decide: bool, shown: bool
) -> None:
    with make_app().test_request_context():
        view = status_view(awaiting_car(outcome), may_decide=may_decide)

    assert view.legs is not None
    assert view.legs[Leg.CAR].state == "needs attention"
    assert (view.legs[Leg.CAR].actions is not None) is shown


RUNNING = WorkflowExecutionStatus.RUNNING
COMPLETED = WorkflowExecutionStatus.COMPLETED


# How the run stands, what the saga last said → the status a listing shows.
SUMMARY_TABLE = [
    pytest.param(RUNNING, Outcome.BOOKING, "booking", id="running_booking"),
    pytest.param(RUNNING, Outcome.COMPENSATING, "compensating", id="running_compensating"),
    pytest.param(COMPLETED, Outcome.CANCELLED, "cancelled", id="completed_cancelled"),
    pytest.param(COMPLETED, Outcome.CONFIRMED, "confirmed", id="completed_confirmed"),
    pytest.param(
        WorkflowExecutionStatus.TERMINATED, Outcome.BOOKING, "terminated", id="terminated"
    ),
    pytest.param(WorkflowExecutionStatus.TIMED_OUT, Outcome.BOOKING, "timed out", id="timed_out"),
    pytest.param(WorkflowExecutionStatus.FAILED, None, "failed", id="failed"),
    pytest.param(COMPLETED, None, None, id="completed_before_statuses_were_kept"),
]


@pytest.mark.parametrize(("run", "said", "shown"), SUMMARY_TABLE)
def test_a_listed_booking_shows_what_the_saga_said_or_how_its_run_ended(
    run: WorkflowExecutionStatus, said: Outcome | None, shown: str | None
) -> None:
    started = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
    booking = ListedBooking("jane-smith-000001", run, said, "Jane Smith", started)

    view = summary_view(booking)

    assert view.status == shown
    assert view.model_dump(mode="json", exclude_none=True) == {
        "user_id": "jane-smith-000001",
        "customer": "Jane Smith",
        "started_at": "2026-11-27T18:00:00Z",
        **({"status": shown} if shown else {}),
    }


def test_the_last_page_has_no_next_page_token() -> None:
    assert listing_view(BookingPage([], None)).model_dump(exclude_none=True) == {"bookings": []}
    token = listing_view(BookingPage([], b"\xfb\xff")).next_page_token
    assert token == "-_8"  # base64url, unpadded: safe in a query string as it is
