"""`api/starting.py`: Idempotency-Keys name one booking, and a start whose answer was lost
is never answered with another's booking, against a real Temporal server."""

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities import BookingActivities
from api.access import ANONYMOUS
from api.breaker import Breaker
from api.loop import ClientLoop
from api.models import BookingRequest
from api.settings import ApiSettings
from api.starting import Starting, fingerprint, key_reused, keyed_user_id, started_by
from api.temporal import KeyReused, owner
from starter import generate_unique_username
from tests.support.calls import LosesFirstStart
from tests.support.keys import API_KEYS, as_, caller
from tests.support.trips import JANE, JOHN, final_status
from tests.support.workers import held_by

ONE_EACH = {"car": 1, "hotel": 1, "flight": 1}


def test_same_idempotency_key_twice_is_one_booking(
    http: FlaskClient, activities: BookingActivities, client_loop: ClientLoop, api_client: Client
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = http.post("/bookings", json=JOHN, headers=key).get_json()
    final_status(http, first["status_url"])
    again = http.post("/bookings", json=JOHN, headers=key).get_json()
    book = http.post("/book", json=JOHN, headers=key)

    assert first["user_id"] == again["user_id"] == book.get_json()["user_id"]
    assert first["user_id"] == keyed_user_id(key["Idempotency-Key"])
    assert book.status_code == 200
    assert held_by(activities, first["user_id"]) == ONE_EACH

    query = f"WorkflowId = '{first['user_id']}'"
    assert client_loop.run(api_client.count_workflows(query)).count == 1


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


def test_a_request_keeps_its_fingerprint_across_versions_that_add_fields() -> None:
    # The digest kept in a keyed booking's memo: if it changed when the API
    # learnt deadline_seconds, a retry of a booking made before would be a 422.
    assert fingerprint(BookingRequest.model_validate(JOHN)) == (
        "d418958f561d7d32ac8c42812e1644c86a627fe9935d0fc77d2bd742747257c2"
    )
    with_deadline = BookingRequest.model_validate({**JOHN, "deadline_seconds": 60})
    assert fingerprint(with_deadline) != fingerprint(BookingRequest.model_validate(JOHN))


@pytest.mark.parametrize(
    ("landed", "taken_by", "by"),
    [
        pytest.param(True, None, None, id="landed_while_open"),
        pytest.param(True, None, "alice", id="landed_with_a_key"),
        pytest.param(False, "alice", "bob", id="on_another_clients_booking"),
        pytest.param(False, "alice", "alice", id="on_the_same_clients_earlier_booking"),
        pytest.param(False, "", None, id="on_a_booking_made_while_open"),
    ],
)
def test_a_start_whose_answer_was_lost_is_found_if_it_landed_and_never_taken_for_another(
    make_app: Callable[..., Flask],
    api_settings: ApiSettings,
    activities: BookingActivities,
    address: str,
    client_loop: ClientLoop,
    landed: bool,
    taken_by: str | None,
    by: str | None,
) -> None:
    """`taken_by`: who booked the first id drawn before (None: nobody; "": no key, while open)."""
    first, second = (generate_unique_username("John Doe") for _ in range(2))
    if taken_by is not None:
        app = make_app(replace(api_settings, api_keys=API_KEYS if taken_by else None))
        response = app.test_client().post("/bookings", json=JOHN, headers=as_(taken_by or None))
        first = response.get_json()["user_id"]
    drawn = iter([first, second])
    losing = LosesFirstStart(landed=landed)
    client = client_loop.run(Client.connect(address, interceptors=[losing]))
    bookings = Starting(
        client, api_settings.task_queue, Breaker.for_client(client), lambda name: next(drawn)
    )
    who = caller(by) if by else ANONYMOUS

    handle = client_loop.run(bookings.start(BookingRequest.model_validate(JOHN), None, who))

    assert losing.lost, "the first start's answer was lost"
    if landed:
        assert handle.id == first, "the start that landed is the booking: never a second one"
        assert not client_loop.run(exists(client, second))
    else:
        assert handle.id == second, "a booking found at the id is not this request's"
    assert owner(client_loop.run(handle.describe())) == who.owner


async def exists(client: Client, user_id: str) -> bool:
    try:
        await client.get_workflow_handle(user_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


def test_a_lost_keyed_start_onto_its_keys_booking_of_another_body_is_key_reused(
    make_app: Callable[..., Flask],
    api_settings: ApiSettings,
    activities: BookingActivities,
    address: str,
    client_loop: ClientLoop,
) -> None:
    keyed = make_app(replace(api_settings, api_keys=API_KEYS)).test_client()
    key = str(uuid.uuid4())
    headers = {**as_("alice"), "Idempotency-Key": key}
    user_id = keyed.post("/bookings", json=JOHN, headers=headers).get_json()["user_id"]
    losing = LosesFirstStart(landed=False)
    client = client_loop.run(Client.connect(address, interceptors=[losing]))
    bookings = Starting(
        client, api_settings.task_queue, Breaker.for_client(client), generate_unique_username
    )

    with pytest.raises(KeyReused) as reused:
        client_loop.run(bookings.start(BookingRequest.model_validate(JANE), key, caller("alice")))

    assert losing.lost
    assert reused.value.user_id == user_id


def test_a_keyed_booking_is_this_requests_only_for_its_own_client(
    make_app: Callable[..., Flask],
    api_settings: ApiSettings,
    activities: BookingActivities,
    client_loop: ClientLoop,
    api_client: Client,
) -> None:
    keyed = make_app(replace(api_settings, api_keys=API_KEYS)).test_client()
    headers = {**as_("alice"), "Idempotency-Key": str(uuid.uuid4())}
    user_id = keyed.post("/bookings", json=JOHN, headers=headers).get_json()["user_id"]
    found = client_loop.run(api_client.get_workflow_handle(user_id).describe())
    alice, bob = caller("alice"), caller("bob")
    digest = fingerprint(BookingRequest.model_validate(JOHN))

    assert client_loop.run(started_by(found, digest, alice))
    assert not client_loop.run(started_by(found, digest, bob))
    assert not client_loop.run(started_by(found, "another request", alice))
    assert key_reused(found, alice).user_id == user_id
    assert key_reused(found, bob).user_id is None, "its id is told to its owner alone"
