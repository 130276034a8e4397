"""A person repairs a booking whose undo kept failing, over the API, against real processes.

The provider service (`providers.py`) runs as a process, and is stopped just
as the car's undo is about to run; the worker runs in the test, calling it
as any worker would. An operator then retries the undo, or resolves it by
hand, through the HTTP API, and `make audit`'s command checks what is left.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, NamedTuple

import pytest
from flask import Flask
from flask.testing import FlaskClient
from temporalio import activity
from temporalio.client import Client

from activities import BookingActivities, ProviderClient
from api.loop import ClientLoop
from api.settings import ApiSettings
from shared import (
    BookingState,
    BookVacationInput,
    Outcome,
    UndoOutcome,
    UndoReport,
    search_attributes_at_start,
)
from tests.support.histories import activity_runs
from tests.support.keys import API_KEYS, as_
from tests.support.providers import StartProviders
from tests.support.trips import final_status, listed_with, trip
from tests.support.workers import worker_thread
from tools.processes import ROOT, ProviderProcess
from workflows import BookingWorkflow

OPS = as_("ops")


class StoppedAtTheCarUndo(BookingActivities):
    """The real activities; the provider service is stopped as the car's first undo starts."""

    def __init__(self, providers: ProviderProcess) -> None:
        super().__init__(ProviderClient(providers.url))
        self.service: ProviderProcess | None = providers

    @activity.defn(name="undo_book_car")
    async def undo_book_car(self, book_input: BookVacationInput) -> UndoReport:
        if self.service is not None:
            service, self.service = self.service, None
            await asyncio.to_thread(service.stop)  # SIGTERM, and wait until it has exited
        return await super().undo_book_car(book_input)


@pytest.fixture
def task_queue() -> str:
    return f"repair-{uuid.uuid4()}"


@pytest.fixture
def api(make_app: Callable[..., Flask], api_settings: ApiSettings, task_queue: str) -> FlaskClient:
    """The API with keys (alice a client, ops an operator), on the test's task queue."""
    settings = replace(api_settings, api_keys=API_KEYS, task_queue=task_queue)
    return make_app(settings).test_client()


def start_janes_booking(
    client_loop: ClientLoop, api_client: Client, task_queue: str, undo_attempts: int = 2
) -> str:
    """Start Jane's booking (the hotel refuses) as the API would for alice; return its id."""
    booking = trip(hotel="invalid-hotel-id", undo_attempts=undo_attempts)
    start = api_client.start_workflow(
        BookingWorkflow.run,
        booking,
        id=booking.book_user_id,
        task_queue=task_queue,
        search_attributes=search_attributes_at_start("Jane Smith", "alice"),
    )
    client_loop.run(start)
    return booking.book_user_id


def until_waiting(api: FlaskClient, user_id: str) -> dict[str, Any]:
    """Poll the booking's status until it waits for a person; return it."""
    deadline = time.monotonic() + 60
    while (shown := api.get(f"/bookings/{user_id}", headers=OPS).get_json())["status"] != (
        "needs attention"
    ):
        assert shown["status"] in ("booking", "compensating"), shown
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    return dict(shown)


def progress(client_loop: ClientLoop, api_client: Client, user_id: str) -> BookingState:
    handle = api_client.get_workflow_handle(user_id, result_type=BookingState)
    return client_loop.run(handle.query(BookingWorkflow.progress))


def audit(address: str, url: str, task_queue: str) -> subprocess.CompletedProcess[str]:
    """Run `make audit`'s command on the test's bookings and provider service."""
    return subprocess.run(
        [sys.executable, "-m", "tools.audit", "--task-queue", task_queue, "--providers-url", url],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        capture_output=True,
        text=True,
        check=False,
    )


class Waiting(NamedTuple):
    """Jane's booking, waiting for a person: the provider service, its id, its status then."""

    providers: ProviderProcess
    user_id: str
    shown: dict[str, Any]


@pytest.fixture
def waiting_jane(
    start_providers: StartProviders,
    api: FlaskClient,
    client_loop: ClientLoop,
    api_client: Client,
    address: str,
    task_queue: str,
) -> Iterator[Waiting]:
    """Jane's booking (`undo_attempts=2`), its car's undo failing against a stopped service;
    its worker runs until the test's end."""
    providers = start_providers()
    with worker_thread(address, StoppedAtTheCarUndo(providers), task_queue):
        user_id = start_janes_booking(client_loop, api_client, task_queue)
        yield Waiting(providers, user_id, until_waiting(api, user_id))


def retry(api: FlaskClient, user_id: str) -> dict[str, Any]:
    answer = api.post(f"/bookings/{user_id}/legs/car/retry-undo", headers=OPS)
    assert answer.status_code == 200, answer.get_json()
    return dict(answer.get_json()["undo"])


@pytest.mark.timeout(120)
def test_an_operator_retries_while_the_car_rental_is_down_then_once_it_is_back(
    waiting_jane: Waiting,
    start_providers: StartProviders,
    api: FlaskClient,
    client_loop: ClientLoop,
    api_client: Client,
    address: str,
    task_queue: str,
) -> None:
    providers, user_id, shown = waiting_jane
    listed = listed_with(api, "needs attention", user_id, OPS)
    waiting = progress(client_loop, api_client, user_id)
    while_down = retry(api, user_id)
    still = api.get(f"/bookings/{user_id}", headers=OPS).get_json()["status"]
    start_providers(providers.port)  # back where the worker knows it
    once_back = retry(api, user_id)
    ended = final_status(api, f"/bookings/{user_id}", OPS)
    audited = audit(address, providers.url, task_queue)

    assert [b["user_id"] for b in listed["bookings"]] == [user_id]
    assert shown["legs"]["car"]["state"] == "needs attention"
    assert shown["legs"]["car"]["error"].endswith("(no attempts left)")
    assert waiting.outcome is Outcome.NEEDS_ATTENTION
    assert [(c.leg, c.outcome) for c in waiting.compensations] == [
        ("hotel", UndoOutcome.NOTHING_TO_UNDO),  # its step never took effect; run before the car's
        ("car", UndoOutcome.NEEDS_ATTENTION),
    ]
    assert (while_down["outcome"], while_down["retries"], still) == (
        "needs attention",
        1,
        "needs attention",
    )
    assert (once_back["outcome"], once_back["retries"], once_back["decided_by"]) == (
        "released",
        2,
        "ops",
    )
    assert ended["status"] == "cancelled"
    assert ended["result"]["compensations"][-1] == once_back
    assert audited.returncode == 0, audited.stdout
    assert "audit clean" in audited.stdout.splitlines()


def release_by_hand(url: str, user_id: str) -> dict[str, Any]:
    """Release the car as a person would, at the provider itself (docs/providers.md's curl)."""
    request = urllib.request.Request(
        f"{url}/car/undo",
        data=f'{{"user_id": "{user_id}"}}'.encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": f'"{user_id}/car"'},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return dict(json.loads(answer.read()))


@pytest.mark.timeout(120)
def test_a_booking_resolved_by_hand_completes_with_the_note_and_the_operators_name(
    waiting_jane: Waiting,
    start_providers: StartProviders,
    api: FlaskClient,
    address: str,
    task_queue: str,
) -> None:
    providers, user_id, _ = waiting_jane
    start_providers(providers.port)
    released = release_by_hand(providers.url, user_id)
    note = {"note": "released at the rental desk's own console"}
    resolved = api.post(f"/bookings/{user_id}/legs/car/resolve", headers=OPS, json=note)
    ended = final_status(api, f"/bookings/{user_id}", OPS)
    audited = audit(address, providers.url, task_queue)

    assert released == {"leg": "car", "released": True}
    assert resolved.status_code == 200, resolved.get_json()
    car = ended["result"]["compensations"][-1]
    assert (car["outcome"], car["decided_by"], car["note"]) == (
        "resolved by hand",
        "ops",
        "released at the rental desk's own console",
    )
    assert car["error"].endswith("(no attempts left)")
    assert audited.returncode == 0, audited.stdout


@pytest.mark.timeout(60)
def test_a_provider_that_refuses_the_undo_needs_attention_at_once(
    start_providers: StartProviders,
    api: FlaskClient,
    client_loop: ClientLoop,
    api_client: Client,
    address: str,
    task_queue: str,
) -> None:
    providers = start_providers(SIM_CAR_UNDO_REJECT_RATE="1")
    activities = BookingActivities(ProviderClient(providers.url))
    with worker_thread(address, activities, task_queue):
        user_id = start_janes_booking(client_loop, api_client, task_queue, undo_attempts=10)
        shown = until_waiting(api, user_id)
        handle = api_client.get_workflow_handle(user_id)
        runs = client_loop.run(activity_runs(handle))
        api.post(f"/bookings/{user_id}/legs/car/resolve", headers=OPS, json={"note": "n"})

    assert shown["legs"]["car"]["error"].startswith("the car provider refused to undo")
    assert runs[-1] == ("undo_book_car", 1, "failed")  # one attempt of its ten
