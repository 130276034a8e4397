"""The tutorial's last step, checked in a real browser: the Web UI tells the saga's story,
and tells the bookings apart by their `BookingStatus`."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import (
    TutorialBookings,
    chromium_or_skip,
    listed_workflows,
    run_page,
    tutorial_bookings,
    user_metadata,
    workflow_list,
)

TIMELINE_ROW = re.compile(r"^(?:(?:\d+ • )?\w+ • .+|Deadline: .+)$", re.MULTILINE)
"""A row of the timeline: `[attempt • ]activity • summary`, or the deadline timer's summary."""


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture(scope="module")
def tutorial() -> Iterator[TutorialBookings]:
    """John's and Jane's bookings, ended, on a dev server with a Web UI."""
    with tutorial_bookings() as booked:
        yield booked


def test_web_ui_shows_the_retry_and_both_undos_of_a_rejected_hotel(
    chromium: str, tutorial: TutorialBookings, tmp_path: Path
) -> None:
    with run_page(tutorial.server, tutorial.jane, chromium) as page:
        page.screenshot(path=tmp_path / "compensated-booking.png", full_page=True)
        text = page.inner_text("body")
        events = [
            button.get_attribute("aria-label")
            for button in page.locator("button[aria-label^='Event ']").all()
        ]
        metadata = user_metadata(page)

    assert TIMELINE_ROW.findall(text) == [
        "Deadline: booked within 300 s, or undone",
        "book_car • Book car valid-car-id",
        "2 • book_hotel • Book hotel invalid-hotel-id",
        "undo_book_hotel • Undo hotel booking (its step did not complete)",
        "undo_book_car • Undo car booking (car-1)",
    ]
    # First the deadline's timer, for what was left of 300 s once a worker took
    # the booking up (4m 59s and some), stopped when the hotel failed.
    timer, *steps = events
    assert re.fullmatch(r"Event 1 \(4m, 5\ds\): Canceled", timer or "")
    assert steps == [
        "Event book_car: Completed",
        "Event book_hotel: Failed",
        "Event undo_book_hotel: Completed",
        "Event undo_book_car: Completed",
    ]
    assert "undo_book_flight" not in text
    assert "COMPLETED" in text
    summary, _, current = metadata[:3]
    assert summary == "Trip for Jane Smith"
    assert current.startswith("Cancelled")
    assert "Undone: hotel (nothing to undo), car (released)" in current
    assert (tmp_path / "compensated-booking.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("status", "listed", "traveller", "left_out"),
    [
        ("cancelled", "jane", "Jane Smith", "john"),
        ("confirmed", "john", "John Doe", "jane"),
    ],
    ids=["cancelled", "confirmed"],
)
def test_web_ui_filtered_by_booking_status_lists_only_the_bookings_in_that_status(
    chromium: str,
    tutorial: TutorialBookings,
    status: str,
    listed: str,
    traveller: str,
    left_out: str,
) -> None:
    listed_id, left_out_id = getattr(tutorial, listed), getattr(tutorial, left_out)

    query = f'BookingStatus="{status}"'
    with workflow_list(tutorial.server, query, chromium, showing=listed_id) as page:
        filter_shown = page.get_by_text(f'BookingStatus = "{status}"', exact=True).is_visible()
        rows = listed_workflows(page)

    assert filter_shown  # the query, as the filter bar reads it
    assert left_out_id not in {row["Workflow ID"] for row in rows}
    assert [
        (row["Status"], row["Workflow ID"], row["BookingStatus"], row["BookingCustomer"])
        for row in rows
    ] == [("COMPLETED", listed_id, status, traveller)]
