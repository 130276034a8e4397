"""`api/presenters.py`: a booking's state as the documented JSON."""

import pytest

from api.presenters import status_view
from shared import BookingState, Leg, LegState, Outcome


@pytest.mark.parametrize("outcome", list(Outcome))
def test_status_shows_the_result_exactly_when_the_outcome_is_final(outcome: Outcome) -> None:
    # The progress query may report a final outcome a moment before the workflow closes.
    state = BookingState("jane-smith-000001", [LegState(leg, f"{leg}-id") for leg in Leg], outcome)

    view = status_view(state)

    assert view.status == outcome.value
    assert (view.result is not None) == (outcome in (Outcome.CONFIRMED, Outcome.CANCELLED))
