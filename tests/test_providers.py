"""`providers.py` as a process: each fault a real provider service can have, under a booking.

The worker runs in the test, calling the service at its URL as any worker
would; the service is killed, frozen, loses an answer or refuses, and every
booking still ends booked once or undone, with the audit clean.
"""

import asyncio
import json
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import Client

from activities import BookingActivities, ProviderClient
from shared import BookingState, Compensation, Leg, LegStatus, Outcome, UndoOutcome
from simulated.store import ProviderStore
from tests.support.histories import ActivityRun, activity_runs
from tests.support.processes import wait_for_condition
from tests.support.providers import StartProviders
from tests.support.trips import trip
from tests.support.workers import running_worker, until
from tools.audit import over_http, run_audit
from workflows import BookingWorkflow


def car_store(tmp_path: Path) -> ProviderStore:
    return ProviderStore(Leg.CAR, tmp_path / "providers" / "car.db")


async def audit_clean(client: Client, url: str, task_queue: str) -> None:
    report = await run_audit(client, over_http(url), task_queue)
    assert report.clean, report.summary()


async def booked_through(client: Client, url: str) -> tuple[BookingState, list[ActivityRun]]:
    """Run one booking to its end, its worker calling the providers at `url`; audit it.

    Returns its result and its activities in history order.
    """
    activities = BookingActivities(ProviderClient(url))
    async with running_worker(client, activities) as task_queue:
        booking = trip()
        state = await client.execute_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await audit_clean(client, url, task_queue)
    return state, await activity_runs(client.get_workflow_handle(booking.book_user_id))


@pytest.mark.timeout(90)
async def test_killed_with_the_car_booked_unanswered_and_started_again_holds_one_car(
    client: Client, start_providers: StartProviders, tmp_path: Path
) -> None:
    slow = await asyncio.to_thread(start_providers, SIM_CAR_LATENCY_SECONDS="3")
    activities = BookingActivities(ProviderClient(slow.url))
    async with running_worker(client, activities) as task_queue:
        booking = trip()
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await until(lambda: bool(car_store(tmp_path).held()), "the car committed, unanswered")
        slow.kill()
        await asyncio.to_thread(start_providers, slow.port)  # where the worker knows it
        state = await handle.result()
        await audit_clean(client, slow.url, task_queue)

    car = (await activity_runs(handle))[0]
    assert (car.name, car.outcome) == ("book_car", "completed")
    assert car.attempt >= 2
    assert state.outcome is Outcome.CONFIRMED
    assert [r.reservation_id for r in car_store(tmp_path).held().values()] == [
        state.leg(Leg.CAR).reservation_id
    ]


@pytest.mark.timeout(90)
async def test_frozen_past_the_call_timeout_then_thawed_is_retried_and_books_once(
    client: Client, start_providers: StartProviders, tmp_path: Path
) -> None:
    providers = await asyncio.to_thread(start_providers)
    activities = BookingActivities(ProviderClient(providers.url))
    async with running_worker(client, activities) as task_queue:
        providers.freeze()
        booking = trip()
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )

        async def car_timed_out() -> bool:
            pending = (await handle.describe()).raw_description.pending_activities
            return any(activity.attempt >= 2 for activity in pending)

        await until(car_timed_out, "the car's first attempt timed out", within=30)
        providers.thaw()
        state = await handle.result()
        await audit_clean(client, providers.url, task_queue)

    car = (await activity_runs(handle))[0]
    assert (car.name, car.outcome) == ("book_car", "completed")
    assert car.attempt >= 2
    assert state.outcome is Outcome.CONFIRMED
    assert len(car_store(tmp_path).rows()) == 1


@pytest.mark.timeout(60)
async def test_an_answer_lost_after_the_commit_is_retried_and_gets_the_same_reservation(
    client: Client, start_providers: StartProviders, tmp_path: Path
) -> None:
    # With this seed the car's first answer is lost and its second arrives.
    lossy = await asyncio.to_thread(start_providers, SIM_CAR_LOST_REPLY_RATE="0.5", SIM_SEED="1")
    state, runs = await booked_through(client, lossy.url)

    car = runs[0]
    assert (car.name, car.attempt, car.outcome) == ("book_car", 2, "completed")
    [row] = car_store(tmp_path).rows()
    assert state.leg(Leg.CAR).reservation_id == row.reservation_id == "car-1"


@pytest.mark.timeout(60)
async def test_a_refusal_is_not_retried_and_the_saga_undoes(
    client: Client, start_providers: StartProviders, tmp_path: Path
) -> None:
    refusing = await asyncio.to_thread(start_providers, SIM_HOTEL_REJECT_RATE="1")
    state, runs = await booked_through(client, refusing.url)

    hotel = runs[1]
    assert (hotel.name, hotel.attempt, hotel.outcome) == ("book_hotel", 1, "failed")
    assert state.leg(Leg.HOTEL).status is LegStatus.FAILED
    assert state.reason == "the hotel provider refused 'valid-hotel-id' (simulated)"
    assert state.compensations == [
        Compensation(Leg.HOTEL, UndoOutcome.NOTHING_TO_UNDO),
        Compensation(Leg.CAR, UndoOutcome.RELEASED),
    ]
    assert car_store(tmp_path).held() == {}


def book(url: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{url}/flight/book",
        json.dumps({"user_id": "jane-smith-1", "item_id": "LH1"}).encode(),
        {"Content-Type": "application/json", "Idempotency-Key": '"jane-smith-1/flight"'},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, str] = json.load(response)
        return answer


def test_sigterm_lets_the_call_in_flight_answer_then_exits_0(
    start_providers: StartProviders, tmp_path: Path
) -> None:
    providers = start_providers(SIM_LATENCY_SECONDS="2")  # answers 2 s after its commit
    flights = ProviderStore(Leg.FLIGHT, tmp_path / "providers" / "flight.db")
    assert providers.process is not None
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(book, providers.url)
        wait_for_condition(lambda: bool(flights.rows()), "the flight committed, unanswered")
        providers.process.send_signal(signal.SIGTERM)
        answer = call.result(timeout=15)

    assert answer["reservation_id"] == "flight-1"
    assert providers.process.wait(15) == 0
    assert "Providers stopped" in "".join(providers.lines)
