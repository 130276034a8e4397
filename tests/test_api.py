"""The API for real clients: async bookings, status, cancel, idempotency keys, health,
and the published contract, against a real Temporal server and worker.
"""

import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from temporalio.client import Client

from activities import BookingActivities
from config import ApiSettings
from helpers import (
    JANE,
    JOHN,
    CountingGateway,
    GatedFlight,
    cancel_seen,
    held,
    held_by,
    quick,
    worker_thread,
)
from run_stack import free_port
from shared import BookingState, Leg, LegState, Outcome
from starter import create_app, keyed_booking_id, status_view
from temporal_gateway import TemporalGateway

ONE_EACH = {"car": 1, "hotel": 1, "flight": 1}


def final_status(http: FlaskClient, url: str) -> dict[str, Any]:
    """Poll a booking's status URL until the booking has ended."""
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = http.get(url).get_json()
        if body["status"] in ("confirmed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_post_bookings_answers_202_and_the_status_url_shows_the_result(
    http: FlaskClient,
) -> None:
    response = http.post("/bookings", json=JOHN)

    assert response.status_code == 202
    body = response.get_json()
    assert response.headers["Location"] == body["status_url"] == f"/bookings/{body['user_id']}"
    done = final_status(http, body["status_url"])
    assert done["status"] == "confirmed"
    assert {leg: view["state"] for leg, view in done["legs"].items()} == dict.fromkeys(
        ("car", "hotel", "flight"), "booked"
    )
    assert done["result"]["result"] == (
        "Booked car: valid-car-id Booked hotel: valid-hotel-id Booked flight: valid-flight-id"
    )


def test_status_of_a_cancelled_booking_shows_each_legs_undo(http: FlaskClient) -> None:
    url = http.post("/bookings", json=JANE).get_json()["status_url"]

    done = final_status(http, url)

    assert {leg: view["state"] for leg, view in done["legs"].items()} == {
        "car": "released",
        "hotel": "nothing to undo",
        "flight": "pending",
    }
    assert done["result"]["result"] == "Voyage cancelled"


@pytest.fixture
def gated(address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A worker whose airline answers only when the test opens the gate."""
    activities = quick(GatedFlight, tmp_path_factory.mktemp("gated"), hotel_outage=False)
    task_queue = f"gated-{uuid.uuid4()}"
    with worker_thread(address, activities, task_queue) as loop:
        yield activities, task_queue, loop


def test_cancel_a_running_booking_over_http_undoes_every_leg(
    gateway: CountingGateway, gated: Any
) -> None:
    activities, task_queue, loop = gated
    http = create_app(gateway, ApiSettings(task_queue=task_queue)).test_client()
    url = http.post("/bookings", json=JOHN).get_json()["status_url"]
    while not activities.gate.reached.is_set():
        time.sleep(0.05)

    running = http.get(url).get_json()
    cancel = http.post(f"{url}/cancel")
    handle_of = running["user_id"]
    while not gateway.call(lambda c: cancel_seen(c.get_workflow_handle(handle_of))):
        time.sleep(0.05)  # the airline answers only after the workflow saw the cancel
    loop.call_soon_threadsafe(activities.gate.opened.set)
    done = final_status(http, url)

    assert running["status"] == "booking"
    assert [running["legs"][leg]["state"] for leg in ("car", "hotel", "flight")] == [
        "booked",
        "booked",
        "pending",
    ]
    assert cancel.status_code == 202
    assert cancel.headers["Location"] == url
    assert done["result"]["reason"] == "cancelled by request"
    assert {view["state"] for view in done["legs"].values()} == {"released"}
    assert held(activities) == 0


def test_cancelling_a_booking_that_has_ended_is_409(http: FlaskClient) -> None:
    url = http.post("/bookings", json=JOHN).get_json()["status_url"]
    final_status(http, url)

    response = http.post(f"{url}/cancel")

    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["user_id"] == url.rsplit("/", 1)[1]


@pytest.mark.parametrize("request_", ["GET /bookings/nobody-000000", "POST /bookings/x/cancel"])
def test_unknown_booking_is_404(http: FlaskClient, request_: str) -> None:
    method, path = request_.split()

    response = http.open(path, method=method)

    assert response.status_code == 404
    assert response.get_json()["detail"].startswith("no booking")


def test_same_idempotency_key_twice_is_one_booking(
    http: FlaskClient, activities: BookingActivities, gateway: CountingGateway
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = http.post("/bookings", json=JOHN, headers=key).get_json()
    final_status(http, first["status_url"])
    again = http.post("/bookings", json=JOHN, headers=key).get_json()
    book = http.post("/book", json=JOHN, headers=key)

    assert first["user_id"] == again["user_id"] == book.get_json()["user_id"]
    assert first["user_id"] == keyed_booking_id(key["Idempotency-Key"])
    assert book.status_code == 200
    assert held_by(activities, first["user_id"]) == ONE_EACH

    async def runs(client: Client) -> int:
        return (await client.count_workflows(f"WorkflowId = '{first['user_id']}'")).count

    assert gateway.call(runs) == 1


def test_same_idempotency_key_with_another_body_is_422(http: FlaskClient) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = http.post("/bookings", json=JOHN, headers=key).get_json()

    response = http.post("/bookings", json={**JOHN, "car": "other-car"}, headers=key)

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["user_id"] == first["user_id"]


def test_concurrent_duplicates_make_one_booking(
    http: FlaskClient, activities: BookingActivities
) -> None:
    key = {"Idempotency-Key": f'"{uuid.uuid4()}"'}  # quoted, as a structured-field string
    barrier = threading.Barrier(10)

    def send(_: int) -> tuple[int, str]:
        barrier.wait()
        response = http.post("/bookings", json=JOHN, headers=key)
        return response.status_code, response.get_json()["user_id"]

    with ThreadPoolExecutor(10) as pool:
        answers = set(pool.map(send, range(10)))

    assert len(answers) == 1
    status, user_id = answers.pop()
    assert status == 202
    final_status(http, f"/bookings/{user_id}")
    assert held_by(activities, user_id) == ONE_EACH


@pytest.mark.parametrize("key", ["", "ünïcode", "x" * 256, "with space"])
def test_malformed_idempotency_key_is_400(http: FlaskClient, key: str) -> None:
    response = http.post("/bookings", json=JOHN, headers={"Idempotency-Key": key})

    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["detail"]


def test_healthz_and_readyz_answer_when_a_worker_polls(http: FlaskClient) -> None:
    assert http.get("/healthz").get_json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.get_json()["workers"] >= 1


def test_readyz_is_503_when_no_worker_polls(gateway: CountingGateway) -> None:
    nobody = ApiSettings(task_queue=f"nobody-{uuid.uuid4()}")

    response = create_app(gateway, nobody).test_client().get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "no worker polls" in response.get_json()["detail"]


def test_readyz_is_503_when_temporal_is_down() -> None:
    gateway = TemporalGateway.start(lambda: Client.connect(f"127.0.0.1:{free_port()}"))
    try:
        response = create_app(gateway).test_client().get("/readyz")
    finally:
        gateway.close()

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


def test_openapi_document_is_3_1_and_lists_every_operation(http: FlaskClient) -> None:
    document = http.get("/openapi.json").get_json()

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/book",
        "/bookings",
        "/bookings/{user_id}",
        "/bookings/{user_id}/cancel",
        "/healthz",
        "/readyz",
        "/openapi.json",
    }
    request_schema = document["components"]["schemas"]["BookingRequest"]
    assert request_schema["required"] == ["name", "attempts", "car", "hotel", "flight"]
    assert request_schema["additionalProperties"] is False


FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_every_operation_holds_to_its_schema_under_fuzzing(
    gateway: CountingGateway, api_settings: ApiSettings, activities: BookingActivities
) -> None:
    """schemathesis: no 5xx, and every answer conforms to the OpenAPI document."""
    app = create_app(gateway, replace(api_settings, book_wait_seconds=5))
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    @FUZZ
    @given(case=schema.as_strategy())
    def fuzz(case: Any) -> None:
        # Every check but one: the server is knowingly stricter than the schema
        # on Unicode format characters, which no portable JSON Schema regex names.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    fuzz()


def test_service_stays_healthy_after_hostile_input(http: FlaskClient) -> None:
    for body in (b"\xff\xfe", b"{" * 10_000, b'{"name": "\\ud800"}', b"[" + b"1," * 4000 + b"1]"):
        assert (
            400 <= http.post("/book", data=body, content_type="application/json").status_code < 500
        )
    assert http.get("/healthz").status_code == 200
    assert http.post("/book", json=JOHN).status_code == 200


@pytest.mark.parametrize("outcome", list(Outcome))
def test_status_shows_the_result_exactly_when_the_outcome_is_final(outcome: Outcome) -> None:
    # The progress query may report a final outcome a moment before the workflow closes.
    state = BookingState("jane-smith-000001", [LegState(leg, f"{leg}-id") for leg in Leg], outcome)

    view = status_view(state)

    assert view.status == outcome.value
    assert (view.result is not None) == (outcome in (Outcome.CONFIRMED, Outcome.CANCELLED))


def test_a_name_with_a_slash_still_gets_a_reachable_status_url(http: FlaskClient) -> None:
    answer = http.post("/bookings", json={**JOHN, "name": "AC/DC Fan Club"})

    assert re.fullmatch(r"/bookings/ac-dc-fan-club-\d{6}", answer.headers["Location"])
    assert final_status(http, answer.headers["Location"])["status"] == "confirmed"
