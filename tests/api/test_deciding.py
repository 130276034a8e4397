"""`api/deciding.py` and its routes: an operator retries or resolves a leg that needs attention.

Against a real Temporal server and worker, whose car rental refuses every
undo of a booking until the test mends it: Jane's booking (the hotel
refused) then waits for a person with its car held.
"""

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities import BookingActivities
from api.deciding import NOT_TAKEN_UP
from api.loop import ClientLoop
from api.settings import ApiSettings
from shared import MAX_NOTE_LENGTH, BookVacationInput, UndoReport, search_attributes_at_start
from tests.support.calls import CallRecorder
from tests.support.keys import API_KEYS, as_
from tests.support.trips import JANE, JOHN, final_status, listed_with, trip
from tests.support.workers import held_by, quick, worker_thread
from workflows import BookingWorkflow


class RefusedCarUndo(BookingActivities):
    """The car rental refuses to undo a booking (for good) until its id is in `mended`;
    it takes 3 s over the undo of one in `slow`."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.mended: set[str] = set()
        self.slow: set[str] = set()

    @activity.defn(name="undo_book_car")
    async def undo_book_car(self, book_input: BookVacationInput) -> UndoReport:
        if book_input.book_user_id not in self.mended:
            raise ApplicationError("car rental: undo refused", type="Refused", non_retryable=True)
        if book_input.book_user_id in self.slow:
            await asyncio.sleep(3)
        return await super().undo_book_car(book_input)


@pytest.fixture(scope="module")
def activities(
    address: str, api_settings: ApiSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RefusedCarUndo]:
    """The module's worker, with the car rental that refuses undos."""
    running = quick(RefusedCarUndo, tmp_path_factory.mktemp("providers"), hotel_outage=False)
    with worker_thread(address, running, api_settings.task_queue):
        yield running


@pytest.fixture
def keyed(
    make_app: Callable[..., Flask], api_settings: ApiSettings, activities: RefusedCarUndo
) -> FlaskClient:
    return make_app(replace(api_settings, api_keys=API_KEYS)).test_client()


OPS = as_("ops")


def waiting(http: FlaskClient) -> str:
    """Book Jane's trip as alice; return its id once it waits for a person."""
    response = http.post("/bookings", json=JANE, headers=as_("alice"))
    assert response.status_code == 202, response.get_json()
    user_id = str(response.get_json()["user_id"])
    deadline = time.monotonic() + 30
    while (status := http.get(f"/bookings/{user_id}", headers=OPS).get_json())["status"] != (
        "needs attention"
    ):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return user_id


def decide(http: FlaskClient, user_id: str, leg: str, action: str, **given: Any) -> Any:
    return http.post(f"/bookings/{user_id}/legs/{leg}/{action}", **given)


def test_a_waiting_booking_shows_its_leg_and_what_an_operator_can_do(keyed: FlaskClient) -> None:
    user_id = waiting(keyed)

    shown = keyed.get(f"/bookings/{user_id}", headers=OPS).get_json()
    listed = listed_with(keyed, "needs attention", user_id, OPS)

    car = shown["legs"]["car"]
    assert car["state"] == "needs attention"
    assert car["error"] == "car rental: undo refused"
    assert car["reservation_id"].startswith("car-")
    assert "needs_attention_since" in car
    assert car["actions"] == {
        "retry_undo": f"/bookings/{user_id}/legs/car/retry-undo",
        "resolve": f"/bookings/{user_id}/legs/car/resolve",
    }
    assert shown["legs"]["hotel"]["state"] == "nothing to undo"
    assert "actions" not in shown["legs"]["hotel"]
    assert {b["status"] for b in listed["bookings"]} == {"needs attention"}


def test_a_retry_that_fails_still_waits_and_one_that_works_completes_it(
    keyed: FlaskClient, activities: RefusedCarUndo
) -> None:
    user_id = waiting(keyed)

    still = decide(keyed, user_id, "car", "retry-undo", headers=OPS)
    activities.mended.add(user_id)
    worked = decide(keyed, user_id, "car", "retry-undo", headers=OPS)
    ended = final_status(keyed, f"/bookings/{user_id}", OPS)

    assert still.status_code == 200
    assert still.get_json()["undo"] == {
        "step": "car",
        "outcome": "needs attention",
        "error": "car rental: undo refused",
        "needs_attention_since": still.get_json()["undo"]["needs_attention_since"],
        "retries": 1,
    }
    assert worked.status_code == 200
    assert worked.get_json() == {
        "user_id": user_id,
        "status_url": f"/bookings/{user_id}",
        "undo": {
            "step": "car",
            "outcome": "released",
            "needs_attention_since": still.get_json()["undo"]["needs_attention_since"],
            "retries": 2,
            "decided_by": "ops",
        },
    }
    assert ended["status"] == "cancelled"
    assert ended["result"]["compensations"][-1] == worked.get_json()["undo"]
    assert held_by(activities, user_id) == {"car": 0, "hotel": 0, "flight": 0}


def test_resolving_completes_it_with_the_note_and_the_operators_name(
    keyed: FlaskClient,
) -> None:
    user_id = waiting(keyed)

    resolved = decide(keyed, user_id, "car", "resolve", headers=OPS, json={"note": "by phone"})
    ended = final_status(keyed, f"/bookings/{user_id}", OPS)
    again = decide(keyed, user_id, "car", "resolve", headers=OPS, json={"note": "another"})

    undo = resolved.get_json()["undo"]
    assert resolved.status_code == 200
    assert (undo["outcome"], undo["decided_by"], undo["note"]) == (
        "resolved by hand",
        "ops",
        "by phone",
    )
    assert ended["result"]["compensations"][-1] == undo
    assert again.status_code == 200
    assert again.get_json()["undo"] == undo


def test_cancelling_a_booking_that_waits_for_a_person_is_a_conflict(keyed: FlaskClient) -> None:
    user_id = waiting(keyed)

    answer = keyed.post(f"/bookings/{user_id}/cancel", headers=OPS)

    assert answer.status_code == 409
    assert "waits for a person: an operator's decision" in answer.get_json()["detail"]


@pytest.fixture
def impatient(
    make_app: Callable[..., Flask], api_settings: ApiSettings, activities: RefusedCarUndo
) -> FlaskClient:
    """The API with keys, waiting 1 s for a worker to take a decision up, and 1 s for its answer."""
    app = make_app(replace(api_settings, api_keys=API_KEYS))
    second = timedelta(seconds=1)
    deciding = app.extensions["deciding"]
    app.extensions["deciding"] = replace(deciding, accept_wait=second, decision_wait=second)
    return app.test_client()


def test_a_retry_that_runs_on_answers_202_and_completes_the_booking_later(
    impatient: FlaskClient, activities: RefusedCarUndo
) -> None:
    user_id = waiting(impatient)
    activities.mended.add(user_id)
    activities.slow.add(user_id)

    answer = decide(impatient, user_id, "car", "retry-undo", headers=OPS)
    ended = final_status(impatient, f"/bookings/{user_id}", OPS)

    assert answer.status_code == 202
    assert answer.headers["Location"] == f"/bookings/{user_id}"
    assert answer.get_json()["status_url"] == f"/bookings/{user_id}"
    assert ended["result"]["compensations"][-1]["outcome"] == "released"


def test_a_decision_no_worker_takes_up_answers_503(
    impatient: FlaskClient, client_loop: ClientLoop, api_client: Client
) -> None:
    booking = replace(trip(), book_user_id=f"jane-smith-{uuid.uuid4().hex[:6]}")
    start = api_client.start_workflow(
        BookingWorkflow.run,
        booking,
        id=booking.book_user_id,
        task_queue=f"nobody-{uuid.uuid4()}",
        search_attributes=search_attributes_at_start("Jane Smith", "alice"),
    )
    handle = client_loop.run(start)
    try:
        answer = decide(impatient, booking.book_user_id, "car", "retry-undo", headers=OPS)
    finally:
        client_loop.run(handle.terminate("test over"))

    assert answer.status_code == 503
    assert answer.get_json()["detail"] == NOT_TAKEN_UP
    assert answer.headers["Retry-After"] == "5"


def booking_ended(http: FlaskClient, body: dict[str, Any]) -> str:
    response = http.post("/bookings", json=body, headers=as_("alice"))
    user_id = str(response.get_json()["user_id"])
    final_status(http, f"/bookings/{user_id}", OPS)
    return user_id


def repaired(http: FlaskClient) -> str:
    user_id = waiting(http)
    decide(http, user_id, "car", "resolve", headers=OPS, json={"note": "by phone"})
    final_status(http, f"/bookings/{user_id}", OPS)
    return user_id


NOTE = {"json": {"note": "released by phone"}}

# Which booking, which leg and decision, with which key and body → the answer.
REJECTED = [
    pytest.param(
        waiting,
        "hotel",
        "retry-undo",
        "ops",
        {},
        409,
        "the hotel does not need attention",
        id="leg_not_waiting",
    ),
    pytest.param(waiting, "boat", "retry-undo", "ops", {}, 404, "no leg 'boat'", id="unknown_leg"),
    pytest.param(
        lambda http: booking_ended(http, JOHN),
        "car",
        "resolve",
        "ops",
        NOTE,
        409,
        "is not waiting for a decision: it is confirmed",
        id="booking_confirmed",
    ),
    pytest.param(
        repaired,
        "car",
        "retry-undo",
        "ops",
        {},
        409,
        "is not waiting for a decision: it is cancelled",
        id="booking_already_repaired",
    ),
    pytest.param(
        waiting, "car", "retry-undo", "alice", {}, 404, "no booking", id="clients_key_retry"
    ),
    pytest.param(
        waiting, "car", "resolve", "alice", NOTE, 404, "no booking", id="clients_key_resolve"
    ),
    pytest.param(
        waiting, "car", "resolve", "ops", {"json": {}}, 400, "invalid field 'note'", id="no_note"
    ),
    pytest.param(
        waiting,
        "car",
        "resolve",
        "ops",
        {"json": {"note": " "}},
        400,
        "invalid field 'note'",
        id="blank_note",
    ),
    pytest.param(
        waiting,
        "car",
        "resolve",
        "ops",
        {"json": {"note": "x" * (MAX_NOTE_LENGTH + 1)}},
        400,
        "invalid field 'note'",
        id="oversize_note",
    ),
    pytest.param(
        waiting,
        "car",
        "resolve",
        "ops",
        {"json": {"note": "n", "by": "me"}},
        400,
        "invalid field 'by'",
        id="extra_field",
    ),
    pytest.param(
        waiting, "car", "resolve", "ops", {"data": "note"}, 415, "application/json", id="not_json"
    ),
]


@pytest.mark.parametrize(("booking", "leg", "action", "key", "given", "status", "detail"), REJECTED)
def test_a_decision_that_cannot_be_taken_is_refused_and_changes_nothing(
    keyed: FlaskClient,
    client_loop: ClientLoop,
    api_client: Client,
    recorder: CallRecorder,
    booking: Callable[[FlaskClient], str],
    leg: str,
    action: str,
    key: str,
    given: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    user_id = booking(keyed)
    before = history_length(client_loop, api_client, user_id)
    updates, calls = recorder.updates, recorder.calls

    response = decide(keyed, user_id, leg, action, headers=as_(key), **given)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert detail in response.get_json()["detail"]
    if key == "alice" or status != 409:
        assert (recorder.updates, recorder.calls) == (updates, calls), "nothing reached Temporal"
    assert history_length(client_loop, api_client, user_id) == before


def history_length(client_loop: ClientLoop, client: Client, user_id: str) -> int:
    """Return how many events the booking's history holds (read on the API's loop)."""

    async def count() -> int:
        return len([e async for e in client.get_workflow_handle(user_id).fetch_history_events()])

    return client_loop.run(count())


def test_the_decisions_are_in_the_openapi_document(keyed: FlaskClient) -> None:
    paths = keyed.get("/openapi.json").get_json()["paths"]

    retry = paths["/bookings/{user_id}/legs/{leg}/retry-undo"]["post"]
    resolve = paths["/bookings/{user_id}/legs/{leg}/resolve"]["post"]
    assert retry["operationId"] == "retryUndo"
    assert set(retry["responses"]) == {"200", "202", "401", "404", "409", "502", "503"}
    assert resolve["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResolveRequest"
    }
