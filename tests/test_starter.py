"""`starter.py`: the tutorial's `POST /book`, against a real Temporal server and worker."""

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio.client import Client, WorkflowExecutionStatus
from werkzeug.serving import ThreadedWSGIServer
from werkzeug.test import TestResponse

from activities import BookingActivities
from api.inputs import MAX_BODY_BYTES
from api.loop import ClientLoop
from api.settings import ApiSettings
from starter import create_app, generate_unique_username
from tests.support.calls import CallRecorder
from tests.support.trips import JANE, JOHN, JOHN_BOOKED
from tests.support.workers import held
from tools.processes import DevServer, free_port

UNREACHABLE = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "Temporal is unreachable; try again shortly",
    "instance": "/book",
}


TUTORIAL_REQUESTS = [
    pytest.param(
        JOHN,
        r"john-doe-\d{6}",
        JOHN_BOOKED,
        3,
        id="valid_trip_is_booked",
    ),
    pytest.param(
        JANE,
        r"jane-smith-\d{6}",
        {
            "cancelled": True,
            "result": "Voyage cancelled",
            "reason": "Invalid hotel booking: 'invalid-hotel-id'",
            "failed_step": "hotel",
            "compensations": [
                {"step": "hotel", "outcome": "nothing to undo"},
                {"step": "car", "outcome": "released"},
            ],
        },
        0,
        id="invalid_hotel_is_voyage_cancelled_with_the_undos",
    ),
]


@pytest.mark.parametrize(("body", "user_id", "answer", "new_reservations"), TUTORIAL_REQUESTS)
def test_tutorial_request_gets_the_documented_json(
    http: FlaskClient,
    activities: BookingActivities,
    body: dict[str, object],
    user_id: str,
    answer: dict[str, object],
    new_reservations: int,
) -> None:
    before = held(activities)

    response = http.post("/book", json=body)

    assert response.status_code == 200
    got = response.get_json()
    assert re.fullmatch(user_id, got.pop("user_id"))
    assert got == answer
    assert held(activities) == before + new_reservations


def test_fifty_concurrent_bookings_share_one_client_loop_and_all_succeed(
    make_app: Callable[..., Flask], activities: BookingActivities, recorder: CallRecorder
) -> None:
    server = ThreadedWSGIServer("127.0.0.1", 0, make_app())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/book"

    def book(n: int) -> tuple[int, dict[str, Any]]:
        body = json.dumps({**JOHN, "name": f"Traveller {n}"}).encode()
        request = urllib.request.Request(
            url, body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)

    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(book, range(50)))
    finally:
        server.shutdown()
        server.server_close()

    assert {status for status, _ in answers} == {200}
    assert all(body["cancelled"] is False for _, body in answers)
    user_ids = {body["user_id"] for _, body in answers}
    assert len(user_ids) == 50
    assert all(re.fullmatch(r"traveller-\d+-\d{6}", user_id) for user_id in user_ids)
    # Every request thread handed its async view, and so every Temporal call, to the one loop.
    assert recorder.calls >= 100  # a start and a result a booking
    assert recorder.threads == {"temporal-loop"}


BAD_BODIES = [
    pytest.param({k: v for k, v in JOHN.items() if k != "hotel"}, "hotel", id="missing_hotel"),
    pytest.param({**JOHN, "name": None}, "name", id="null_name"),
    pytest.param({**JOHN, "name": ""}, "name", id="empty_name"),
    pytest.param({**JOHN, "name": "   "}, "name", id="blank_name"),
    pytest.param({**JOHN, "name": "John\x00Doe"}, "name", id="control_character_in_name"),
    pytest.param({**JOHN, "name": "x" * 101}, "name", id="overlong_name"),
    pytest.param({**JOHN, "attempts": "5"}, "attempts", id="attempts_as_string"),
    pytest.param({**JOHN, "attempts": True}, "attempts", id="attempts_as_bool"),
    pytest.param({**JOHN, "attempts": 2.5}, "attempts", id="fractional_attempts"),
    pytest.param({**JOHN, "name": "\u200b"}, "name", id="zero_width_space_name"),
    pytest.param({**JOHN, "hotel": "\u202evalid"}, "hotel", id="right_to_left_override"),
    pytest.param({**JOHN, "attempts": 0}, "attempts", id="zero_attempts"),
    pytest.param({**JOHN, "attempts": 11}, "attempts", id="too_many_attempts"),
    pytest.param({**JOHN, "car": 42}, "car", id="car_as_number"),
    pytest.param({**JOHN, "flight": ["a"]}, "flight", id="flight_as_list"),
    pytest.param({**JOHN, "hotle": "x"}, "hotle", id="unknown_field"),
    pytest.param({**JOHN, "deadline_seconds": 0}, "deadline_seconds", id="zero_deadline"),
    pytest.param({**JOHN, "deadline_seconds": -5}, "deadline_seconds", id="negative_deadline"),
    pytest.param({**JOHN, "deadline_seconds": "30"}, "deadline_seconds", id="deadline_as_string"),
    pytest.param({**JOHN, "deadline_seconds": 2.5}, "deadline_seconds", id="fractional_deadline"),
    pytest.param({**JOHN, "deadline_seconds": 3601}, "deadline_seconds", id="deadline_over_1_h"),
    pytest.param({**JOHN, "deadline_seconds": True}, "deadline_seconds", id="deadline_as_bool"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_field_is_a_400_naming_it_and_starts_nothing(
    http: FlaskClient,
    recorder: CallRecorder,
    activities: BookingActivities,
    body: dict[str, object],
    field: str,
) -> None:
    calls, reservations = recorder.calls, held(activities)

    response = http.post("/book", json=body)

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["fields"]
    assert f"'{field}'" in response.get_json()["detail"]
    assert (recorder.calls, held(activities)) == (calls, reservations)


BAD_REQUESTS = [
    pytest.param("POST", "{not json", "application/json", 400, id="malformed_json"),
    pytest.param("POST", '["a", "list"]', "application/json", 400, id="json_list"),
    pytest.param("POST", "null", "application/json", 400, id="json_null"),
    pytest.param(
        "POST", '{"attempts": ' + "9" * 5000 + "}", "application/json", 400, id="huge_int"
    ),
    pytest.param("POST", "", "application/json", 400, id="empty_body"),
    pytest.param("POST", "[" * 5000, "application/json", 400, id="deeply_nested"),
    pytest.param("POST", "name=John", "application/x-www-form-urlencoded", 415, id="form"),
    pytest.param("POST", "x" * (MAX_BODY_BYTES + 1), "application/json", 413, id="huge_body"),
    pytest.param("GET", "", None, 405, id="get_book"),
    pytest.param("POST", "{}", "application/json", 404, id="unknown_path"),
]


@pytest.mark.parametrize(("method", "data", "content_type", "status"), BAD_REQUESTS)
def test_bad_request_is_a_4xx_json_error_and_starts_nothing(
    http: FlaskClient,
    recorder: CallRecorder,
    method: str,
    data: str,
    content_type: str | None,
    status: int,
) -> None:
    calls = recorder.calls
    path = "/nowhere" if status == 404 else "/book"

    response = http.open(path, method=method, data=data, content_type=content_type)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == status
    assert isinstance(response.get_json()["detail"], str)
    assert "Traceback" not in response.get_data(as_text=True)
    assert recorder.calls == calls
    if status == 405:
        assert "POST" in response.headers["Allow"]


@contextmanager
def api_without_a_worker(address: str) -> Iterator[Flask]:
    """The app on a client of its own, lazily connected as `starter.connected_app` makes it."""
    client_loop = ClientLoop.start()
    try:
        client = client_loop.run(Client.connect(address, lazy=True))
        yield create_app(client, client_loop)
    finally:
        client_loop.close()


def test_stopped_temporal_answers_503_naming_the_booking_then_503_at_once(tmp_path: Path) -> None:
    server = DevServer(tmp_path, ui=False)
    server.start()
    try:
        with api_without_a_worker(server.address) as app:
            assert app.test_client().get("/bookings/nobody-000000").status_code == 404  # connected
            server.stop()

            first = app.test_client().post("/book", json=JOHN)
            asked = time.monotonic()
            then = app.test_client().post("/book", json=JOHN)
            took = time.monotonic() - asked
            server.start()  # on its file: did the first booking start after all?
            lookup = answer_once_reachable(app, f"/bookings/{first.get_json()['user_id']}")
    finally:
        server.stop()

    assert first.status_code == 503
    assert first.headers["Retry-After"] == "5"
    body = first.get_json()
    assert re.fullmatch(r"john-doe-\d{6}", body["user_id"])
    assert f"it may have started: follow /bookings/{body['user_id']}" in body["detail"]
    assert lookup.status_code == 404, "the server was down: the booking never started"
    assert then.status_code == 503
    assert then.get_json() == UNREACHABLE
    assert took < 2, "once Temporal is known unreachable, requests must not wait on it"


def answer_once_reachable(app: Flask, path: str, within: float = 5) -> TestResponse:
    """GET `path` until it answers something other than 503, for up to `within` s."""
    deadline = time.monotonic() + within
    while (response := app.test_client().get(path)).status_code == 503:
        assert time.monotonic() < deadline, "Temporal is back, but the API still answers 503"
        time.sleep(0.1)
    return response


def test_temporal_down_at_start_up_answers_503_json() -> None:
    with api_without_a_worker(f"127.0.0.1:{free_port()}") as app:
        response = app.test_client().post("/book", json=JOHN)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == UNREACHABLE


def test_booking_still_running_after_the_wait_answers_202_with_its_user_id(
    make_app: Callable[..., Flask], client_loop: ClientLoop, api_client: Client
) -> None:
    nobody_polls = ApiSettings(task_queue=f"nobody-{uuid.uuid4()}", book_wait_seconds=0.5)

    response = make_app(nobody_polls).test_client().post("/book", json=JOHN)

    assert response.status_code == 202
    body = response.get_json()
    assert re.fullmatch(r"john-doe-\d{6}", body["user_id"])
    assert body["status"] == "in progress"
    assert response.headers["Location"] == body["status_url"] == f"/bookings/{body['user_id']}"

    async def describe_and_terminate() -> WorkflowExecutionStatus | None:
        handle = api_client.get_workflow_handle(body["user_id"])
        status = (await handle.describe()).status
        await handle.terminate("test over")
        return status

    assert client_loop.run(describe_and_terminate()) == WorkflowExecutionStatus.RUNNING


@pytest.mark.parametrize(
    ("name", "user_id"),
    [
        pytest.param("John Doe", r"john-doe-\d{6}", id="tutorial_name"),
        pytest.param("AC/DC Fan Club", r"ac-dc-fan-club-\d{6}", id="slash"),
        pytest.param("  Ünïcode  Ñame ", r"ünïcode-ñame-\d{6}", id="letters_beyond_ascii"),
        pytest.param("!!!", r"trip-\d{6}", id="no_letters_at_all"),
    ],
)
def test_generate_unique_username_makes_a_url_safe_id_from_the_name(
    name: str, user_id: str
) -> None:
    assert re.fullmatch(user_id, generate_unique_username(name))
