"""The tutorial's bookings in the Temporal Web UI, seen through headless Chromium.

Shared by `tests/test_web_ui.py` and `tools/screenshots.py` (`make screenshots`).
"""

import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from temporalio.client import Client
from werkzeug.test import TestResponse

from api.loop import ClientLoop
from starter import create_app
from tests.support.trips import JANE, JOHN
from tests.support.workers import quick_activities, worker_thread
from tools.processes import DevServer

CHROMIUM_FLAGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    # This machine reaches no network but package registries: no background calls.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

BOOKING_COLUMNS = ("BookingStatus", "BookingCustomer")
"""The saga's search attributes, shown as columns of the workflow list."""


def chromium_or_skip() -> str:
    """Return Debian's Chromium; skip where it is missing, but fail on CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium on CI: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium: `apt-get install chromium` to run the Web UI test")
    return found


@dataclass(frozen=True)
class TutorialBookings:
    """The tutorial's two bookings, both ended, on a dev server with a Web UI."""

    server: DevServer
    john: str
    """John Doe's workflow id: his trip was booked."""
    jane: str
    """Jane Smith's: her hotel was rejected and her car given back."""


@contextmanager
def tutorial_bookings() -> Iterator[TutorialBookings]:
    """Run the tutorial's two bookings through the API on a dev server with a Web UI."""
    with tempfile.TemporaryDirectory() as scratch:
        server = DevServer(Path(scratch))
        server.start()
        try:
            activities = quick_activities(Path(scratch) / "providers")
            # The worker stays up while a page is open: the Web UI asks it (a
            # query) for a workflow's current details.
            with worker_thread(server.address, activities):
                client_loop = ClientLoop.start()
                try:
                    client = client_loop.run(Client.connect(server.address))
                    http = create_app(client, client_loop).test_client()
                    # Jane's first, so her car is car-1, as the README's picture shows.
                    jane, john = (
                        _ended_booking(http.post("/book", json=body)) for body in (JANE, JOHN)
                    )
                finally:
                    client_loop.close()
                yield TutorialBookings(server, john, jane)
        finally:
            server.stop()


def _ended_booking(answer: TestResponse) -> str:
    assert answer.status_code == 200, answer.get_data(as_text=True)  # ended, not 202
    user_id: str = answer.get_json()["user_id"]
    return user_id


@contextmanager
def chromium_page(chromium: str, width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """Open a blank page in headless Chromium."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@contextmanager
def run_page(server: DevServer, workflow_id: str, chromium: str) -> Iterator[Page]:
    """Open a workflow run's page in the Web UI, once its timeline has drawn."""
    with chromium_page(chromium) as page:
        url = (
            f"http://127.0.0.1:{server.settings.ui_port}/namespaces/default/workflows/{workflow_id}"
        )
        page.goto(url, wait_until="networkidle")
        page.get_by_text("undo_book_car").first.wait_for(timeout=30_000)
        yield page


def user_metadata(page: Page) -> list[str]:
    """Open the User Metadata tab; return its texts: summary, details, current details.

    Each is drawn in a frame of its own, and the current details come from a
    query to the worker: wait until all three have text, as a person would.
    """
    page.get_by_text("User Metadata").first.click()
    deadline = time.monotonic() + 30
    while True:
        try:
            frames = [frame for frame in page.frames if "/render?" in frame.url]
            texts = [" ".join(frame.inner_text("body").split()) for frame in frames]
            if len(texts) >= 3 and all(texts[:3]):
                return texts
        except PlaywrightError:
            pass  # a frame was drawn again while being read
        assert time.monotonic() < deadline, "the User Metadata tab never filled in"
        page.wait_for_timeout(200)


def list_url(server: DevServer, query: str) -> str:
    """Return the Web UI's address of the workflow list filtered by a visibility `query`."""
    return (
        f"http://127.0.0.1:{server.settings.ui_port}/namespaces/default/workflows"
        f"?query={urllib.parse.quote(query, safe='')}"
    )


@contextmanager
def workflow_list(server: DevServer, query: str, chromium: str, *, showing: str) -> Iterator[Page]:
    """Open the workflow list filtered by `query`, with the booking columns, listing `showing`.

    Visibility is eventually consistent: a workflow may be listed a moment
    after it changed. The page is loaded again until `showing`'s row is there.
    """
    with chromium_page(chromium, width=1500, height=560) as page:
        page.goto(list_url(server, query), wait_until="networkidle")
        show_booking_columns(page)
        row = page.get_by_role("row").filter(has_text=showing)
        deadline = time.monotonic() + 30
        while True:
            try:
                row.wait_for(timeout=2_000)
                break
            except PlaywrightTimeoutError:
                assert time.monotonic() < deadline, f"{showing} never listed by {query}"
                page.reload(wait_until="networkidle")
        yield page


def show_booking_columns(page: Page) -> None:
    """Configure the list's columns as a person would: the booking ones beside the id.

    Run ID and End make room. The Web UI keeps the choice in the browser's
    storage, so it holds when the page is loaded again.
    """
    page.get_by_role("button", name="Configure Columns").click()
    for column in ("Run ID", "End"):
        page.get_by_role("button", name=f"Remove {column} column").click()
    for column in BOOKING_COLUMNS:
        page.get_by_role("button", name=f"Add {column} column").click()
        for _ in ("Start", "Type"):  # to just after Workflow ID and the previous one
            page.get_by_role("button", name=f"Move {column} column up").click()
    close = page.get_by_role("button", name="Close Workflows Table configuration")
    close.click()
    close.wait_for(state="hidden")


def listed_workflows(page: Page) -> list[dict[str, str]]:
    """Return the list's rows as a person reads them: each column's header and the cell's text."""
    table = page.get_by_role("table", name="Workflows")
    headers = [
        " ".join(text.split()) for text in table.get_by_role("columnheader").all_inner_texts()
    ]
    return [
        {
            header: " ".join(text.split())
            for header, text in zip(headers, row.get_by_role("cell").all_inner_texts(), strict=True)
            if header and header != "Select all Workflows"  # the checkboxes' column
        }
        for row in table.get_by_role("row").all()[1:]  # below the header's
    ]
