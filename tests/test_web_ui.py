"""The tutorial's last step, checked in a real browser: the Web UI tells the saga's story."""

import re
from pathlib import Path

from tests.support.browser import chromium_or_skip, compensated_booking, run_page, user_metadata


def test_web_ui_shows_the_retry_and_both_undos_of_a_rejected_hotel(tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    with compensated_booking() as (server, user_id), run_page(server, user_id, chromium) as page:
        page.screenshot(path=tmp_path / "compensated-booking.png", full_page=True)
        text = page.inner_text("body")
        events = [
            button.get_attribute("aria-label")
            for button in page.locator("button[aria-label^='Event ']").all()
        ]
        metadata = user_metadata(page)

    timeline = re.findall(r"^(?:\d+ • )?\w+ • .+$", text, re.MULTILINE)
    assert timeline == [
        "book_car • Book car valid-car-id",
        "2 • book_hotel • Book hotel invalid-hotel-id",
        "undo_book_hotel • Undo hotel booking (its step did not complete)",
        "undo_book_car • Undo car booking (car-1)",
    ]
    assert events == [
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
