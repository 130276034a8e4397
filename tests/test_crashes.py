"""The saga under crashes and faults: real worker processes, killed without warning."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from activities import BookingActivities
from shared import Compensation, Leg, Outcome, UndoOutcome
from simulated.faults import ProviderFaults, Simulation
from simulated.store import ProviderStore, RowStatus
from tests.support.histories import activity_runs, eventually
from tests.support.providers import client as client_of
from tests.support.providers import rows_of
from tests.support.trips import trip
from tests.support.workers import running_worker
from tools.audit import run_audit
from tools.chaos import ChaosPlan, run_chaos
from tools.processes import DevServer, WorkerProcess
from workflows import BookingWorkflow

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def task_queue() -> str:
    return f"crash-{uuid.uuid4()}"


@pytest.fixture
def stores(tmp_path: Path) -> dict[Leg, ProviderStore]:
    return ProviderStore.open_all(tmp_path / "providers")


@pytest.fixture
def spawn(address: str, task_queue: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start `run_worker.py` processes on this test's queue and stores."""
    started: list[WorkerProcess] = []

    def start(**sim: str) -> WorkerProcess:
        worker = WorkerProcess(
            {
                "TEMPORAL_ADDRESS": address,
                "TEMPORAL_TASK_QUEUE": task_queue,
                "PROVIDERS_DIR": str(tmp_path / "providers"),
                "PROVIDERS_PORT": "0",  # each serves the providers itself, on a port of its own
                "SIM_HOTEL_OUTAGE": "0",
                **sim,
            }
        )
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def assert_audit_clean(
    client: Client, stores: dict[Leg, ProviderStore], task_queue: str
) -> None:
    report = await run_audit(client, rows_of(stores), task_queue)
    assert report.clean, report.summary()


@pytest.mark.timeout(90)
async def test_worker_killed_after_the_car_is_booked_is_retried_holding_one_car(
    client: Client, spawn: Spawn, stores: dict[Leg, ProviderStore], task_queue: str
) -> None:
    first = await asyncio.to_thread(spawn, SIM_CAR_LATENCY_SECONDS="5")
    booking = trip()
    handle = await client.start_workflow(
        BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
    )

    async def car_booked_but_not_answered() -> bool:
        return bool(stores[Leg.CAR].held())

    await eventually(car_booked_but_not_answered)
    first.kill()
    await asyncio.to_thread(spawn)
    state = await handle.result()

    assert state.outcome is Outcome.CONFIRMED
    car = (await activity_runs(handle))[0]
    assert (car.name, car.outcome) == ("book_car", "completed")
    assert car.attempt >= 2
    assert len(stores[Leg.CAR].held()) == 1
    await assert_audit_clean(client, stores, task_queue)


@pytest.mark.timeout(90)
async def test_worker_killed_during_an_undo_finishes_the_undos_after_restart(
    client: Client, spawn: Spawn, stores: dict[Leg, ProviderStore], task_queue: str
) -> None:
    first = await asyncio.to_thread(spawn, SIM_HOTEL_LATENCY_SECONDS="3")
    booking = trip(flight="invalid-flight-id")
    handle = await client.start_workflow(
        BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
    )

    async def hotel_released_but_not_answered() -> bool:
        return any(row.status is RowStatus.RELEASED for row in stores[Leg.HOTEL].rows())

    await eventually(hotel_released_but_not_answered)
    first.kill()
    await asyncio.to_thread(spawn)
    state = await handle.result()

    assert state.compensations == [
        Compensation(Leg.FLIGHT, UndoOutcome.NOTHING_TO_UNDO),
        Compensation(Leg.HOTEL, UndoOutcome.RELEASED),
        Compensation(Leg.CAR, UndoOutcome.RELEASED),
    ]
    undo_hotel = next(run for run in await activity_runs(handle) if run.name == "undo_book_hotel")
    assert undo_hotel.attempt >= 2
    assert all(not store.held() for store in stores.values())
    await assert_audit_clean(client, stores, task_queue)


async def test_answers_lost_after_the_side_effect_never_double_book(
    client: Client, stores: dict[Leg, ProviderStore], tmp_path: Path
) -> None:
    lossy = ProviderFaults(lost_reply_rate=0.5)
    simulation = Simulation(hotel_outage=False, faults=dict.fromkeys(Leg, lossy), seed=3)
    activities = BookingActivities(client_of(tmp_path / "providers", simulation))
    async with running_worker(client, activities) as task_queue:
        handles = [
            await client.start_workflow(
                BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
            )
            for booking in (trip(attempts=10) for _ in range(20))
        ]
        states = await asyncio.gather(*(handle.result() for handle in handles))
        await assert_audit_clean(client, stores, task_queue)

    retried = {
        run.name
        for handle in handles
        for run in await activity_runs(handle)
        if run.attempt >= 2 and run.name.startswith("book_")
    }
    assert retried == {"book_car", "book_hotel", "book_flight"}
    confirmed = sum(state.outcome is Outcome.CONFIRMED for state in states)
    assert [len(store.held()) for store in stores.values()] == [confirmed] * 3


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[DevServer]:
    server = DevServer(tmp_path)
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.mark.timeout(120)
async def test_saga_waiting_on_a_slow_step_survives_a_server_restart(
    own_server: DevServer, stores: dict[Leg, ProviderStore], tmp_path: Path
) -> None:
    client = await Client.connect(own_server.address)
    slow_car = ProviderFaults(latency_seconds=3)
    simulation = Simulation(hotel_outage=False, faults={Leg.CAR: slow_car})
    activities = BookingActivities(client_of(tmp_path / "providers", simulation))
    async with running_worker(client, activities) as task_queue:
        booking = trip()
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )

        async def car_in_flight() -> bool:
            return bool(stores[Leg.CAR].held())

        await eventually(car_in_flight)
        await asyncio.to_thread(own_server.stop)
        await asyncio.sleep(1)
        await asyncio.to_thread(own_server.start)
        state = await handle.result()
        await assert_audit_clean(client, stores, task_queue)

    assert state.outcome is Outcome.CONFIRMED
    assert [len(store.held()) for store in stores.values()] == [1, 1, 1]


@pytest.mark.timeout(240)
async def test_chaos_run_with_workers_and_the_providers_killed_and_frozen_leaves_the_audit_clean(
    address: str, tmp_path: Path
) -> None:
    plan = ChaosPlan(bookings=100, worker_kills=2, provider_kills=1, provider_freezes=1)
    result = await run_chaos(plan, address, tmp_path)

    assert result.clean, result.summary()
    assert result.crashes == {"worker kills": 2, "provider kills": 1, "provider freezes": 1}
    assert result.outcomes.total() == 100
    assert {Outcome.CONFIRMED, Outcome.CANCELLED} <= set(result.outcomes)
