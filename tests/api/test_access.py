"""`api/access.py`: who may call what, against a real Temporal server and worker.

A client reaches its own bookings alone (another's is a 404, as a missing one
is), by id, by cancel, by listing and by Idempotency-Key; an operator reaches
every booking and books none; a request without a known key starts nothing.
The parts by themselves are in `test_access_keys.py`.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from temporalio.client import Client
from werkzeug.test import TestResponse

from activities import BookingActivities
from api.loop import ClientLoop
from api.settings import ApiSettings
from tests.support.calls import CallRecorder
from tests.support.histories import cancel_requested
from tests.support.keys import API_KEYS, KEYS, as_, one_character_changed
from tests.support.processes import wait_for_condition
from tests.support.trips import JANE, JOHN, GatedFlight, final_status
from tests.support.workers import quick, worker_thread


@pytest.fixture(scope="module")
def gated(
    address: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatedFlight, str]]:
    """A worker whose airline never answers during the module: its bookings keep running."""
    activities = quick(GatedFlight, tmp_path_factory.mktemp("gated"), hotel_outage=False)
    task_queue = f"gated-{uuid.uuid4()}"
    with worker_thread(address, activities, task_queue) as loop:
        yield activities, task_queue
        loop.call_soon_threadsafe(activities.gate.opened.set)


@pytest.fixture
def keyed(
    make_app: Callable[..., Flask], api_settings: ApiSettings, activities: BookingActivities
) -> FlaskClient:
    """The API with keys, on a worker whose bookings end at once."""
    return make_app(replace(api_settings, api_keys=API_KEYS)).test_client()


@pytest.fixture
def running(
    make_app: Callable[..., Flask], api_settings: ApiSettings, gated: tuple[GatedFlight, str]
) -> FlaskClient:
    """The API with keys, on a worker whose bookings stay running."""
    _, task_queue = gated
    return make_app(replace(api_settings, api_keys=API_KEYS, task_queue=task_queue)).test_client()


def book(http: FlaskClient, owner: str, body: dict[str, Any] = JOHN) -> str:
    """Book as `owner`; return the booking's id."""
    response = http.post("/bookings", json=body, headers=as_(owner))
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["user_id"])


def booking_of(
    owner: str, ended: bool, keyed: FlaskClient, running: FlaskClient
) -> tuple[FlaskClient, str]:
    """Book as `owner` a trip that has ended (Jane's, undone at once) or still runs (John's,
    held at the airline); return the API it was booked through, and its id."""
    if not ended:
        return running, book(running, owner, JOHN)
    user_id = book(keyed, owner, JANE)
    final_status(keyed, f"/bookings/{user_id}", headers=as_(owner))
    return keyed, user_id


def is_not_found(response: TestResponse, user_id: str) -> bool:
    """Whether the answer is exactly that of a booking that does not exist."""
    return response.status_code == 404 and response.get_json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": f"no booking {user_id!r}",
        "instance": response.request.path,
    }


@pytest.mark.parametrize(
    ("caller", "owner", "ended", "expected"),
    [
        pytest.param("alice", "alice", False, 200, id="client_own_running"),
        pytest.param("alice", "alice", True, 200, id="client_own_ended"),
        pytest.param("bob", "alice", False, 404, id="client_others_running"),
        pytest.param("bob", "alice", True, 404, id="client_others_ended"),
        pytest.param("ops", "alice", False, 200, id="operator_running"),
        pytest.param("ops", "alice", True, 200, id="operator_ended"),
    ],
)
def test_status_is_shown_to_its_owner_and_operators_alone(
    keyed: FlaskClient, running: FlaskClient, caller: str, owner: str, ended: bool, expected: int
) -> None:
    http, user_id = booking_of(owner, ended, keyed, running)

    response = http.get(f"/bookings/{user_id}", headers=as_(caller))

    if expected == 404:
        assert is_not_found(response, user_id)
    else:
        assert response.status_code == 200
        assert response.get_json()["user_id"] == user_id
        assert response.get_json()["status"] == ("cancelled" if ended else "booking")


@pytest.mark.parametrize(
    ("caller", "owner", "ended", "expected"),
    [
        pytest.param("alice", "alice", False, 202, id="client_own_running"),
        pytest.param("alice", "alice", True, 409, id="client_own_ended"),
        pytest.param("bob", "alice", False, 404, id="client_others_running"),
        pytest.param("bob", "alice", True, 404, id="client_others_ended"),
        pytest.param("ops", "alice", False, 202, id="operator_running"),
        pytest.param("ops", "alice", True, 409, id="operator_ended"),
    ],
)
def test_cancel_reaches_its_owners_and_operators_bookings_alone(
    keyed: FlaskClient,
    running: FlaskClient,
    client_loop: ClientLoop,
    api_client: Client,
    recorder: CallRecorder,
    caller: str,
    owner: str,
    ended: bool,
    expected: int,
) -> None:
    http, user_id = booking_of(owner, ended, keyed, running)
    cancels = recorder.cancels

    response = http.post(f"/bookings/{user_id}/cancel", headers=as_(caller))

    if expected == 404:
        assert is_not_found(response, user_id)
    else:
        assert response.status_code == expected
    if expected == 202:
        handle = api_client.get_workflow_handle(user_id)
        wait_for_condition(
            lambda: client_loop.run(cancel_requested(handle)), "the cancel in the history"
        )
    else:
        assert recorder.cancels == cancels, "no cancel reached Temporal"


def listed(http: FlaskClient, caller: str, **query: str) -> set[str]:
    """Return the ids `caller` lists, every page of them."""
    ids: set[str] = set()
    token = None
    while True:
        params = {**query, **({"page_token": token} if token else {})}
        response = http.get("/bookings", query_string=params, headers=as_(caller))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        ids |= {booking["user_id"] for booking in body["bookings"]}
        token = body.get("next_page_token")
        if token is None:
            return ids


def test_a_listing_shows_a_client_its_own_bookings_and_an_operator_all(
    keyed: FlaskClient,
) -> None:
    customer = f"Traveller {uuid.uuid4()}"  # the bookings of this test alone
    trip = {**JOHN, "name": customer}
    mine, theirs = book(keyed, "alice", trip), book(keyed, "bob", trip)
    for user_id, owner in ((mine, "alice"), (theirs, "bob")):
        final_status(keyed, f"/bookings/{user_id}", headers=as_(owner))

    confirmed = {"customer": customer, "status": "confirmed"}
    wait_for_condition(  # visibility lags a moment: until both show as they ended
        lambda: listed(keyed, "ops", **confirmed) == {mine, theirs}, "both listed, confirmed"
    )

    assert listed(keyed, "alice", customer=customer) == {mine}
    assert listed(keyed, "bob", customer=customer) == {theirs}
    assert listed(keyed, "alice", **confirmed) == {mine}
    assert listed(keyed, "bob", **confirmed) == {theirs}


def test_the_same_idempotency_key_names_one_booking_per_client(keyed: FlaskClient) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}

    first = keyed.post("/bookings", json=JOHN, headers={**as_("alice"), **key})
    second = keyed.post("/bookings", json=JANE, headers={**as_("bob"), **key})
    again = keyed.post("/bookings", json=JOHN, headers={**as_("alice"), **key})

    alices, bobs = first.get_json()["user_id"], second.get_json()["user_id"]
    assert (first.status_code, second.status_code, again.status_code) == (202, 202, 202)
    assert alices != bobs
    assert again.get_json()["user_id"] == alices
    assert is_not_found(keyed.get(f"/bookings/{bobs}", headers=as_("alice")), bobs)
    assert is_not_found(keyed.get(f"/bookings/{alices}", headers=as_("bob")), alices)
    assert final_status(keyed, f"/bookings/{alices}", headers=as_("alice"))["status"] == "confirmed"
    assert final_status(keyed, f"/bookings/{bobs}", headers=as_("bob"))["status"] == "cancelled"


@pytest.mark.parametrize(
    ("caller", "method", "path", "expected"),
    [
        pytest.param("alice", "POST", "/book", 200, id="client_books_and_waits"),
        pytest.param("alice", "POST", "/bookings", 202, id="client_books"),
        pytest.param("ops", "POST", "/book", 403, id="operator_may_not_book_and_wait"),
        pytest.param("ops", "POST", "/bookings", 403, id="operator_may_not_book"),
        pytest.param("alice", "GET", "/metrics", 403, id="client_may_not_read_metrics"),
        pytest.param("ops", "GET", "/metrics", 200, id="operator_reads_metrics"),
        pytest.param(None, "GET", "/metrics", 401, id="metrics_need_a_key"),
        pytest.param(None, "GET", "/bookings", 401, id="listing_needs_a_key"),
        pytest.param(None, "GET", "/healthz", 200, id="health_needs_no_key"),
        pytest.param(None, "GET", "/readyz", 200, id="readiness_needs_no_key"),
        pytest.param(None, "GET", "/openapi.json", 200, id="contract_needs_no_key"),
        pytest.param(None, "HEAD", "/bookings/x", 401, id="head_needs_a_key"),
        pytest.param(None, "OPTIONS", "/bookings", 401, id="options_needs_a_key"),
        pytest.param(None, "GET", "/no-such-route", 404, id="no_such_route"),
        pytest.param(None, "DELETE", "/bookings", 405, id="no_such_method"),
    ],
)
def test_each_route_answers_by_the_callers_role(
    keyed: FlaskClient,
    recorder: CallRecorder,
    caller: str | None,
    method: str,
    path: str,
    expected: int,
) -> None:
    body = JOHN if method == "POST" else None
    calls = recorder.calls

    response = keyed.open(path, method=method, json=body, headers=as_(caller))

    assert response.status_code == expected, response.get_data(as_text=True)
    if expected >= 400:
        assert response.mimetype == "application/problem+json"
        assert recorder.calls == calls, "no call reached Temporal"
    if expected == 403:
        assert "may not do this" in response.get_json()["detail"]


BAD_AUTHORIZATION = [
    pytest.param(None, "Bearer", id="no_header"),
    # Not a Bearer credential at all: the challenge alone (RFC 6750, 3.1).
    pytest.param("", "Bearer", id="empty"),
    pytest.param(KEYS["alice"], "Bearer", id="no_scheme"),
    pytest.param(f"Basic {KEYS['alice']}", "Bearer", id="wrong_scheme"),
    pytest.param("Bearer", 'Bearer error="invalid_request"', id="scheme_alone"),
    pytest.param("Bearer ", 'Bearer error="invalid_request"', id="scheme_and_space"),
    pytest.param(f"Bearer {'k' * 300}", 'Bearer error="invalid_request"', id="over_long"),
    pytest.param(f"Bearer {KEYS['alice']} x", 'Bearer error="invalid_request"', id="two_words"),
    pytest.param(
        f"Bearer {one_character_changed(KEYS['alice'])}",
        'Bearer error="invalid_token"',
        id="one_char_changed",
    ),
    pytest.param("Bearer unknown-key", 'Bearer error="invalid_token"', id="unknown_key"),
]


@pytest.mark.parametrize(("authorization", "challenge"), BAD_AUTHORIZATION)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/book"),
        ("POST", "/bookings"),
        ("GET", "/bookings/x"),
        ("POST", "/bookings/x/cancel"),
    ],
)
def test_a_request_without_a_known_key_is_401_and_starts_nothing(
    keyed: FlaskClient,
    recorder: CallRecorder,
    authorization: str | None,
    challenge: str,
    method: str,
    path: str,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    calls = recorder.calls

    response = keyed.open(path, method=method, json=JOHN, headers=headers)

    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == challenge
    assert recorder.calls == calls, "no call reached Temporal"
    text = response.get_data(as_text=True)
    assert not any(key in text for key in (*KEYS.values(), one_character_changed(KEYS["alice"])))


def test_without_keys_the_api_is_open_as_the_tutorials(http: FlaskClient) -> None:
    user_id = http.post("/bookings", json=JOHN).get_json()["user_id"]

    assert final_status(http, f"/bookings/{user_id}")["status"] == "confirmed"
    assert http.get("/metrics").status_code == 200


def test_with_keys_a_public_route_has_no_caller_to_see_bookings_with(
    make_app: Callable[..., Flask], api_settings: ApiSettings
) -> None:
    app = make_app(replace(api_settings, api_keys=API_KEYS))

    with app.test_request_context("/healthz"):
        app.preprocess_request()

        assert "caller" not in g  # so current_caller() fails rather than see every booking
