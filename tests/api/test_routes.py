"""`api/routes.py`: following, cancelling and health, against a real Temporal server and worker."""

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio.client import Client

from api.loop import ClientLoop
from api.settings import ApiSettings
from starter import create_app
from tests.support.histories import cancel_seen, step_cancel_requested
from tests.support.processes import wait_for_condition
from tests.support.trips import JANE, JOHN, GatedFlight, final_status
from tests.support.workers import held, quick, worker_thread
from tools.processes import free_port


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
    make_app: Callable[..., Flask], client_loop: ClientLoop, api_client: Client, gated: Any
) -> None:
    activities, task_queue, loop = gated
    http = make_app(ApiSettings(task_queue=task_queue)).test_client()
    url = http.post("/bookings", json=JOHN).get_json()["status_url"]
    while not activities.gate.reached.is_set():
        time.sleep(0.05)

    running = http.get(url).get_json()
    cancel = http.post(f"{url}/cancel")
    handle_of = running["user_id"]
    while not client_loop.run(cancel_seen(api_client.get_workflow_handle(handle_of))):
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


@pytest.mark.parametrize(
    ("body", "default"),
    [
        pytest.param({**JOHN, "deadline_seconds": 5}, 300, id="deadline_in_the_body"),
        pytest.param(JOHN, 5, id="BOOKING_DEADLINE_SECONDS"),
    ],
)
def test_a_booking_past_its_deadline_is_undone_and_its_status_says_why(
    make_app: Callable[..., Flask],
    client_loop: ClientLoop,
    api_client: Client,
    gated: Any,
    body: dict[str, Any],
    default: int,
) -> None:
    activities, task_queue, loop = gated
    settings = ApiSettings(task_queue=task_queue, booking_deadline_seconds=default)
    http = make_app(settings).test_client()
    started = http.post("/bookings", json=body).get_json()
    handle = api_client.get_workflow_handle(started["user_id"])
    # The deadline stops the flight; the airline answers after that.
    wait_for_condition(
        lambda: client_loop.run(step_cancel_requested(handle)), "the flight asked to stop"
    )
    loop.call_soon_threadsafe(activities.gate.opened.set)
    done = final_status(http, started["status_url"])

    assert done["status"] == "cancelled"
    assert done["result"]["reason"] == "not booked within its deadline of 5 s"
    assert [undo["step"] for undo in done["result"]["compensations"]] == ["flight", "hotel", "car"]
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


def test_healthz_and_readyz_answer_when_a_worker_polls(http: FlaskClient) -> None:
    assert http.get("/healthz").get_json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"
    assert ready.get_json()["workers"] >= 1


def test_readyz_is_503_when_no_worker_polls(make_app: Callable[..., Flask]) -> None:
    nobody = ApiSettings(task_queue=f"nobody-{uuid.uuid4()}")

    response = make_app(nobody).test_client().get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "no worker polls" in response.get_json()["detail"]


def test_status_with_no_worker_to_answer_is_503_and_leaves_the_breaker_closed(
    make_app: Callable[..., Flask], client_loop: ClientLoop, api_client: Client
) -> None:
    app = make_app(ApiSettings(task_queue=f"nobody-{uuid.uuid4()}"))
    started = app.test_client().post("/bookings", json=JOHN)

    response = app.test_client().get(started.headers["Location"])

    client_loop.run(api_client.get_workflow_handle(started.get_json()["user_id"]).terminate())
    assert started.status_code == 202
    assert response.status_code == 503
    assert response.get_json()["detail"] == "no worker answered; try again shortly"
    assert not app.extensions["following"].breaker.is_open, "a missing worker is not an outage"


def test_readyz_is_503_when_temporal_is_down() -> None:
    client_loop = ClientLoop.start()
    try:
        nowhere = client_loop.run(Client.connect(f"127.0.0.1:{free_port()}", lazy=True))
        response = create_app(nowhere, client_loop).test_client().get("/readyz")
    finally:
        client_loop.close()

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


def test_a_name_with_a_slash_still_gets_a_reachable_status_url(http: FlaskClient) -> None:
    answer = http.post("/bookings", json={**JOHN, "name": "AC/DC Fan Club"})

    assert re.fullmatch(r"/bookings/ac-dc-fan-club-\d{6}", answer.headers["Location"])
    assert final_status(http, answer.headers["Location"])["status"] == "confirmed"
