"""A compensated booking in the Temporal Web UI, seen through headless Chromium.

Shared by `tests/test_web_ui.py` and `tools/screenshots.py` (`make screenshots`).
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright
from temporalio.client import Client

from api.loop import ClientLoop
from starter import create_app
from tests.support.trips import JANE
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


def chromium_or_skip() -> str:
    """Return Debian's Chromium; skip where it is missing, but fail on CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium on CI: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium: `apt-get install chromium` to run the Web UI test")
    return found


@contextmanager
def compensated_booking() -> Iterator[tuple[DevServer, str]]:
    """Run the tutorial's failing booking through the API on a dev server with a Web UI."""
    with tempfile.TemporaryDirectory() as scratch:
        server = DevServer(Path(scratch))
        server.start()
        try:
            activities = quick_activities(Path(scratch) / "providers")
            # The worker stays up while the page is open: the Web UI asks it (a
            # query) for the workflow's current details.
            with worker_thread(server.address, activities):
                client_loop = ClientLoop.start()
                try:
                    client = client_loop.run(Client.connect(server.address))
                    app = create_app(client, client_loop)
                    answer = app.test_client().post("/book", json=JANE)
                finally:
                    client_loop.close()
                yield server, answer.get_json()["user_id"]
        finally:
            server.stop()


@contextmanager
def run_page(server: DevServer, workflow_id: str, chromium: str) -> Iterator[Page]:
    """Open a workflow run's page in the Web UI, once its timeline has drawn."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            url = (
                f"http://127.0.0.1:{server.settings.ui_port}"
                f"/namespaces/default/workflows/{workflow_id}"
            )
            page.goto(url, wait_until="networkidle")
            page.get_by_text("undo_book_car").first.wait_for(timeout=30_000)
            yield page
        finally:
            browser.close()


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
