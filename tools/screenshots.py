"""Re-take the README's picture of a compensated booking: `make screenshots`.

Like `tools/histories.py`, it records what a test checks, so it reuses the
tests' helpers (`tests/support/`): the one place where tools use the tests.
"""

import argparse

from tests.support.browser import chromium_or_skip, compensated_booking, run_page
from tools.processes import ROOT

PICTURE = ROOT / "docs" / "compensated-booking.png"


def main() -> None:
    """Run the tutorial's failing booking and photograph its page in the Web UI."""
    chromium = chromium_or_skip()
    with compensated_booking() as (server, user_id), run_page(server, user_id, chromium) as page:
        page.screenshot(path=PICTURE, full_page=False)
    print(f"wrote {PICTURE}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
