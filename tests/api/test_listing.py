"""`GET /bookings`: bookings found by status and customer, a page at a time, from
Temporal's visibility (the `BookingStatus` and `BookingCustomer` search attributes)."""

import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus as RawStatus
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.converter import encode_search_attributes

from activities import BookingActivities
from api.following import ListedBooking, listed, listing_query, quoted
from api.settings import ApiSettings
from shared import BOOKING_CUSTOMER, BOOKING_STATUS, Outcome
from tests.support.trips import JANE, JOHN, GatedFlight, final_status
from tests.support.workers import quick, quick_activities, worker_thread
from tools.processes import temporal_binary


def listing(http: FlaskClient, **query: Any) -> dict[str, Any]:
    """Return one page of `GET /bookings` with `query`; it must answer 200."""
    response = http.get(f"/bookings?{urllib.parse.urlencode(query)}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def listed_once(
    http: FlaskClient, expected: Callable[[list[str]], bool], **query: Any
) -> list[str]:
    """Poll one page of ids until `expected(ids)` holds: visibility trails the workflows."""
    deadline = time.monotonic() + 30
    while True:
        ids = [booking["user_id"] for booking in listing(http, **query)["bookings"]]
        if expected(ids):
            return ids
        assert time.monotonic() < deadline, f"never as expected: {ids}"
        time.sleep(0.1)


def every_page(http: FlaskClient, page_size: int, **query: Any) -> list[list[str]]:
    """Return the ids of each page of a listing, following next_page_token to the end."""
    pages, token = [], None
    while True:
        page = listing(
            http, page_size=page_size, **query, **({"page_token": token} if token else {})
        )
        pages.append([booking["user_id"] for booking in page["bookings"]])
        token = page.get("next_page_token")
        if token is None:
            return pages


def cli_list(address: str, query: str) -> set[str]:
    """Return the workflow ids `temporal workflow list --query` shows."""
    shown = subprocess.run(
        [
            temporal_binary(),
            "workflow",
            "list",
            "--address",
            address,
            "--query",
            query,
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {run["execution"]["workflowId"] for run in json.loads(shown.stdout or "[]")}


def test_the_tutorials_two_bookings_are_told_apart_by_status_and_customer(
    http: FlaskClient, address: str
) -> None:
    john = http.post("/book", json=JOHN).get_json()["user_id"]
    jane = http.post("/book", json=JANE).get_json()["user_id"]

    cancelled = listed_once(http, lambda ids: jane in ids, status="cancelled")
    confirmed = listed_once(http, lambda ids: john in ids, status="confirmed")
    janes = listing(http, customer="Jane Smith")["bookings"]

    assert john not in cancelled
    assert jane not in confirmed
    assert jane in [booking["user_id"] for booking in janes]
    assert {booking["customer"] for booking in janes} == {"Jane Smith"}
    # Jane booked after John, and finished after him: she is listed first.
    everyone = [booking["user_id"] for booking in listing(http)["bookings"]]
    assert everyone.index(jane) < everyone.index(john)
    # The Temporal CLI, on the same search attribute, agrees.
    in_cli = cli_list(address, 'BookingStatus="cancelled"')
    assert jane in in_cli
    assert john not in in_cli
    assert set(cancelled) <= in_cli


def test_a_listed_booking_shows_its_status_customer_and_start(http: FlaskClient) -> None:
    jane = http.post("/book", json=JANE).get_json()["user_id"]
    listed_once(http, lambda ids: jane in ids, status="cancelled", customer="Jane Smith")

    [shown] = [b for b in listing(http, customer="Jane Smith")["bookings"] if b["user_id"] == jane]

    assert set(shown) == {"user_id", "status", "customer", "started_at"}
    assert shown["status"] == "cancelled"
    assert shown["customer"] == "Jane Smith"
    assert shown["started_at"].startswith(time.strftime("%Y-", time.gmtime()))


@pytest.fixture
def own_queue(
    make_app: Callable[..., Flask], address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FlaskClient, BookingActivities]]:
    """The API and a worker on a task queue of this test alone: its bookings, no others."""
    activities = quick_activities(tmp_path_factory.mktemp("providers"), hotel_outage=False)
    task_queue = f"listing-{uuid.uuid4()}"
    with worker_thread(address, activities, task_queue):
        yield make_app(ApiSettings(task_queue=task_queue)).test_client(), activities


def test_paging_through_120_bookings_50_at_a_time_lists_each_once(
    own_queue: tuple[FlaskClient, BookingActivities],
) -> None:
    http, _ = own_queue
    started = {http.post("/bookings", json=JOHN).get_json()["user_id"] for _ in range(120)}
    deadline = time.monotonic() + 60
    while sum(map(len, every_page(http, 100, status="confirmed"))) < 120:
        assert time.monotonic() < deadline, "the 120 bookings never all showed confirmed"
        time.sleep(0.2)

    pages = every_page(http, 50)

    assert [len(page) for page in pages] == [50, 50, 20]
    every = [user_id for page in pages for user_id in page]
    assert sorted(every) == sorted(started)  # each booking exactly once


BAD_QUERIES = [
    pytest.param("status=unknown", "status", id="unknown_status"),
    pytest.param("status=Cancelled", "status", id="status_in_another_case"),
    pytest.param("status=cancelled&status=confirmed", "status", id="status_twice"),
    pytest.param("page_size=0", "page_size", id="page_size_0"),
    pytest.param("page_size=101", "page_size", id="page_size_101"),
    pytest.param("page_size=-1", "page_size", id="negative_page_size"),
    pytest.param("page_size=ten", "page_size", id="page_size_a_word"),
    pytest.param("page_size=2.5", "page_size", id="fractional_page_size"),
    pytest.param("page_size=5.0", "page_size", id="page_size_with_a_point"),
    pytest.param("page_size=%2B5", "page_size", id="page_size_with_a_sign"),
    pytest.param("page_size=%205", "page_size", id="page_size_with_a_space"),
    pytest.param("page_size=10_0", "page_size", id="page_size_with_an_underscore"),
    pytest.param("page_size=%D9%A5", "page_size", id="page_size_in_arabic_digits"),
    pytest.param("page_token=not%20a%20token!", "page_token", id="token_not_base64url"),
    pytest.param("page_token=a", "page_token", id="token_of_one_character"),
    pytest.param("page_token=Z2FyYmFnZQ", "page_token", id="token_temporal_cannot_read"),
    pytest.param("page_token=" + "A" * 5000, "page_token", id="overlong_token"),
    pytest.param("customer=", "customer", id="empty_customer"),
    pytest.param("customer=%00", "customer", id="control_character_in_customer"),
    pytest.param("customer=" + "x" * 101, "customer", id="overlong_customer"),
    pytest.param("statuss=cancelled", "statuss", id="unknown_parameter"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_QUERIES)
def test_a_bad_query_parameter_is_a_400_naming_it(
    http: FlaskClient, query: str, parameter: str
) -> None:
    response = http.get(f"/bookings?{query}")

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert parameter in (problem.get("fields") or {}) or parameter in problem["detail"]
    assert "Traceback" not in response.get_data(as_text=True)


# A customer that would close the quoted value, or add a clause, if pasted into
# the query: refused when it holds a double quote or a backslash, else matched
# as the plain text it is, which no booking has.
INJECTIONS = [
    pytest.param('Jane Smith" OR BookingCustomer != "x', 400, id="double_quote_then_or"),
    pytest.param('x" OR "1"="1', 400, id="always_true"),
    pytest.param("Jane Smith\\", 400, id="trailing_backslash"),
    pytest.param("Jane Smith' OR '1'='1", 200, id="single_quote_then_or"),
    pytest.param("Jane Smith OR BookingStatus = 'confirmed'", 200, id="or_clause"),
    pytest.param("Jane Smith) OR (WorkflowType != 'x'", 200, id="parentheses"),
    pytest.param("%", 200, id="sql_wildcard"),
    pytest.param("*", 200, id="star"),
]


@pytest.mark.parametrize(("customer", "status"), INJECTIONS)
def test_a_customer_never_widens_the_query(http: FlaskClient, customer: str, status: int) -> None:
    jane = http.post("/book", json=JANE).get_json()["user_id"]
    listed_once(http, lambda ids: jane in ids, customer="Jane Smith")

    response = http.get(f"/bookings?{urllib.parse.urlencode({'customer': customer})}")

    assert response.status_code == status
    if status == 200:
        assert response.get_json() == {"bookings": []}
    else:
        assert "customer" in response.get_json()["fields"]


def test_a_name_with_an_apostrophe_finds_its_own_bookings(http: FlaskClient) -> None:
    booked = http.post("/book", json={**JOHN, "name": "Tim O'Neil"}).get_json()["user_id"]

    found = listed_once(http, lambda ids: booked in ids, customer="Tim O'Neil")

    assert found == [booked]


def test_a_booking_is_listed_as_booking_while_it_runs_then_as_it_ended(
    make_app: Callable[..., Flask], address: str, tmp_path: Path
) -> None:
    activities = quick(GatedFlight, tmp_path, hotel_outage=False)
    task_queue = f"listing-{uuid.uuid4()}"
    with worker_thread(address, activities, task_queue) as loop:
        http = make_app(ApiSettings(task_queue=task_queue)).test_client()
        john = http.post("/bookings", json=JOHN).get_json()["user_id"]
        running = listed_once(http, lambda ids: john in ids, status="booking")
        loop.call_soon_threadsafe(activities.gate.opened.set)
        final_status(http, f"/bookings/{john}")
        confirmed = listed_once(http, lambda ids: john in ids, status="confirmed")
        still_running = listing(http, status="booking")["bookings"]

    assert running == confirmed == [john]
    assert still_running == []


def test_the_query_holds_each_filter_as_a_quoted_value() -> None:
    assert listing_query("q", Outcome.CANCELLED, "Tim O'Neil") == (
        'WorkflowType = "BookingWorkflow" AND TaskQueue = "q" AND '
        'BookingStatus = "cancelled" AND BookingCustomer = "Tim O\'Neil"'
    )
    assert listing_query("q", Outcome.BOOKING, None) == (
        'WorkflowType = "BookingWorkflow" AND TaskQueue = "q" AND '
        'BookingStatus = "booking" AND ExecutionStatus = "Running"'
    )
    assert listing_query("q", None, None, "alice") == (
        'WorkflowType = "BookingWorkflow" AND TaskQueue = "q" AND BookingClient = "alice"'
    )


@pytest.mark.parametrize("value", ['a"b', "a\\b"])
def test_a_value_that_could_end_its_quotes_is_never_quoted(value: str) -> None:
    with pytest.raises(ValueError, match="cannot quote"):
        quoted(value)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        pytest.param("cancelled", Outcome.CANCELLED, id="one_the_saga_sets"),
        pytest.param("on hold", None, id="one_it_never_sets"),
        pytest.param(None, None, id="none"),
    ],
)
def test_a_listed_run_is_read_with_its_search_attributes(
    status: str | None, outcome: Outcome | None
) -> None:
    pairs = [SearchAttributePair(BOOKING_CUSTOMER, "Jane Smith")]
    if status is not None:
        pairs.append(SearchAttributePair(BOOKING_STATUS, status))
    info = WorkflowExecutionInfo(
        execution=WorkflowExecution(workflow_id="jane-smith-000001"),
        status=RawStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED,
        start_time=Timestamp(seconds=1_795_000_000),
    )
    encode_search_attributes(TypedSearchAttributes(pairs), info.search_attributes)

    assert listed(info) == ListedBooking(
        user_id="jane-smith-000001",
        status=WorkflowExecutionStatus.COMPLETED,
        outcome=outcome,
        customer="Jane Smith",
        started_at=datetime.fromtimestamp(1_795_000_000, UTC),
    )
