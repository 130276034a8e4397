"""Re-take the README's pictures of the Web UI: `make screenshots`.

A compensated booking's page, and the workflow list filtered by
`BookingStatus="cancelled"`. Like `tools/histories.py`, it records what a
test checks, so it reuses the tests' helpers (`tests/support/`): the one
place where tools use the tests.
"""

import argparse

from tests.support.browser import chromium_or_skip, run_page, tutorial_bookings, workflow_list
from tools.processes import ROOT

COMPENSATED = ROOT / "docs" / "compensated-booking.png"
CANCELLED = ROOT / "docs" / "cancelled-bookings.png"
CANCELLED_QUERY = 'BookingStatus="cancelled"'


def main() -> None:
    """Run the tutorial's two bookings; photograph Jane's run and the cancelled bookings."""
    chromium = chromium_or_skip()
    with tutorial_bookings() as booked:
        with run_page(booked.server, booked.jane, chromium) as page:
            page.screenshot(path=COMPENSATED, full_page=False)
        print(f"wrote {COMPENSATED}")
        with workflow_list(booked.server, CANCELLED_QUERY, chromium, showing=booked.jane) as page:
            page.screenshot(path=CANCELLED, full_page=False)
        print(f"wrote {CANCELLED}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
