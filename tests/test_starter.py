"""The Flask app against a real Temporal server and worker."""

import json
import re
import subprocess
import threading
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask.testing import FlaskClient
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
)
from werkzeug.serving import ThreadedWSGIServer

from activities import BookingActivities
from config import ApiSettings
from helpers import JANE, JOHN, CountingGateway, ThreadRecorder, held
from run_stack import StackSettings, free_port, server_serving, wait_until
from starter import MAX_BODY_BYTES, create_app
from temporal_gateway import TemporalGateway

T = TypeVar("T")


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
        {
            "cancelled": False,
            "car": "Car: valid-car-id",
            "hotel": "Hotel: valid-hotel-id",
            "flight": "Flight: valid-flight-id",
            "result": "Booked car: valid-car-id Booked hotel: valid-hotel-id "
            "Booked flight: valid-flight-id",
        },
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
    gateway: CountingGateway,
    api_settings: ApiSettings,
    activities: BookingActivities,
    recorder: ThreadRecorder,
) -> None:
    server = ThreadedWSGIServer("127.0.0.1", 0, create_app(gateway, api_settings))
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
    # Every request thread handed its Temporal calls to the one loop thread.
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
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_field_is_a_400_naming_it_and_starts_nothing(
    http: FlaskClient,
    gateway: CountingGateway,
    activities: BookingActivities,
    body: dict[str, object],
    field: str,
) -> None:
    calls, reservations = gateway.calls, held(activities)

    response = http.post("/book", json=body)

    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["fields"]
    assert f"'{field}'" in response.get_json()["detail"]
    assert (gateway.calls, held(activities)) == (calls, reservations)


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
    gateway: CountingGateway,
    method: str,
    data: str,
    content_type: str | None,
    status: int,
) -> None:
    calls = gateway.calls
    path = "/nowhere" if status == 404 else "/book"

    response = http.open(path, method=method, data=data, content_type=content_type)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == status
    assert isinstance(response.get_json()["detail"], str)
    assert "Traceback" not in response.get_data(as_text=True)
    assert gateway.calls == calls
    if status == 405:
        assert "POST" in response.headers["Allow"]


def test_stopped_temporal_answers_503_json(tmp_path: Path) -> None:
    settings = StackSettings(free_port(), free_port(), free_port(), tmp_path / "temporal.db")
    server = subprocess.Popen(
        settings.server_command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: server_serving(settings.address), server, "server")
        gateway = TemporalGateway.start(lambda: Client.connect(settings.address))
    finally:
        server.terminate()
        server.wait(30)
    try:
        response = create_app(gateway).test_client().post("/book", json=JOHN)
    finally:
        gateway.close()

    assert response.status_code == 503
    assert response.get_json() == UNREACHABLE


def test_temporal_down_at_start_up_answers_503_json() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    gateway = TemporalGateway.start(lambda: Client.connect(nowhere))
    try:
        response = create_app(gateway).test_client().post("/book", json=JOHN)
    finally:
        gateway.close()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json() == UNREACHABLE


def test_booking_still_running_after_the_wait_answers_202_with_its_user_id(
    gateway: CountingGateway,
) -> None:
    nobody_polls = ApiSettings(task_queue=f"nobody-{uuid.uuid4()}", book_wait_seconds=0.5)

    response = create_app(gateway, nobody_polls).test_client().post("/book", json=JOHN)

    assert response.status_code == 202
    body = response.get_json()
    assert re.fullmatch(r"john-doe-\d{6}", body["user_id"])
    assert body["status"] == "in progress"
    assert response.headers["Location"] == body["status_url"] == f"/bookings/{body['user_id']}"

    async def describe_and_terminate(client: Client) -> WorkflowExecutionStatus | None:
        handle = client.get_workflow_handle(body["user_id"])
        status = (await handle.describe()).status
        await handle.terminate("test over")
        return status

    assert gateway.call(describe_and_terminate) == WorkflowExecutionStatus.RUNNING
