"""Helpers for the tests: trips, workers and what a workflow's history says."""

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from temporalio import activity
from temporalio.api.enums.v1 import RetryState
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowHandle,
)

from activities import BookingActivities
from config import Simulation
from providers import ProviderStore
from run_worker import build_worker
from shared import TASK_QUEUE_NAME, BookingState, BookVacationInput, Reservation
from temporal_gateway import TemporalGateway
from workflows import BookingWorkflow

ROOT = Path(__file__).resolve().parent.parent

EXTRA_NAMESPACE = "process-tests"
"""A namespace of its own for tests that run `run_worker.py` as a process."""


JOHN = {
    "name": "John Doe",
    "attempts": 5,
    "car": "valid-car-id",
    "hotel": "valid-hotel-id",
    "flight": "valid-flight-id",
}
"""The tutorial's first request body: a trip that books."""

JANE = {**JOHN, "name": "Jane Smith", "attempts": 3, "hotel": "invalid-hotel-id"}
"""The tutorial's second: the hotel is rejected, the car given back."""


def trip(
    *,
    car: str = "valid-car-id",
    hotel: str = "valid-hotel-id",
    flight: str = "valid-flight-id",
    attempts: int = 5,
    undo_attempts: int = 10,
    parallel_undo: bool = False,
) -> BookVacationInput:
    return BookVacationInput(
        attempts=attempts,
        book_user_id=f"test-{uuid.uuid4()}",
        book_car_id=car,
        book_hotel_id=hotel,
        book_flight_id=flight,
        undo_attempts=undo_attempts,
        parallel_undo=parallel_undo,
    )


class Gate:
    """Holds a provider's answer until the test opens it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def hold(self) -> None:
        """Say the call has arrived, then wait for the test to let it answer."""
        self.reached.set()
        await self.opened.wait()


class GatedFlight(BookingActivities):
    """The airline answers only when the test opens its gate."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.gate = Gate()

    @activity.defn(name="book_flight")
    async def book_flight(self, book_input: BookVacationInput) -> Reservation:
        await self.gate.hold()
        return await super().book_flight(book_input)


A = TypeVar("A", bound=BookingActivities)
T = TypeVar("T")


def quick(kind: type[A], directory: Path, *, hotel_outage: bool = True) -> A:
    """A test's activities class with fresh stores in `directory` and no latency."""
    simulation = Simulation(latency_seconds=0, hotel_outage=hotel_outage)
    return kind(simulation, ProviderStore.open_all(directory))


def quick_activities(directory: Path, *, hotel_outage: bool = True) -> BookingActivities:
    """The real activities with fresh stores in `directory` and no latency."""
    return quick(BookingActivities, directory, hotel_outage=hotel_outage)


@asynccontextmanager
async def running_worker(client: Client, activities: BookingActivities) -> AsyncIterator[str]:
    """Run the worker on a fresh task queue; yield the queue's name."""
    task_queue = f"test-{uuid.uuid4()}"
    async with build_worker(client, activities, task_queue):
        yield task_queue


async def run_booking(
    client: Client, activities: BookingActivities, booking: BookVacationInput
) -> tuple[WorkflowHandle[Any, BookingState], BookingState]:
    """Run one booking to its end on a fresh worker; return its handle and result."""
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        return handle, await handle.result()


@asynccontextmanager
async def held_at_gate(
    client: Client, activities: BookingActivities, gate: Gate, booking: BookVacationInput
) -> AsyncIterator[WorkflowHandle[BookingWorkflow, BookingState]]:
    """Start `booking` on a fresh worker; yield its handle once the call reaches `gate`."""
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await asyncio.wait_for(gate.reached.wait(), 30)
        yield handle


@contextmanager
def worker_thread(
    address: str, activities: BookingActivities, task_queue: str = TASK_QUEUE_NAME
) -> Iterator[asyncio.AbstractEventLoop]:
    """Run the worker in a thread with its own loop; yield that loop.

    For synchronous tests (the Flask app), which would block the test's own loop.
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        client = await Client.connect(address)
        async with build_worker(client, activities, task_queue):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30), "worker did not start"
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


class CountingGateway(TemporalGateway):
    """The real gateway, counting the calls that reach Temporal."""

    calls = 0

    def call(self, fn: Callable[[Client], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        self.calls += 1
        return super().call(fn, timeout)


class ThreadRecorder(Interceptor):
    """A client interceptor recording the thread every workflow start runs on."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _Recording(next, self.threads)


class _Recording(OutboundInterceptor):
    def __init__(self, next: OutboundInterceptor, threads: set[str]) -> None:
        super().__init__(next)
        self.threads = threads

    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        self.threads.add(threading.current_thread().name)
        return await super().start_workflow(input)


def held(activities: BookingActivities) -> int:
    """Return how many reservations the activities' providers hold in all."""
    return sum(len(p.held()) for p in activities.providers.values())


def held_by(activities: BookingActivities, user_id: str) -> dict[str, int]:
    """Return how many reservations one booking holds, by leg."""
    return {
        leg: sum(key.startswith(f"{user_id}/") for key in provider.held())
        for leg, provider in activities.providers.items()
    }


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until `check()` holds, polling, for at most 30 seconds."""
    async with asyncio.timeout(30):
        while not await check():  # noqa: ASYNC110 (a server-side state: no event to await)
            await asyncio.sleep(0.1)


async def cancel_seen(handle: WorkflowHandle[Any, Any]) -> bool:
    """Return whether the workflow has run a task since a cancel was requested."""
    requested = False
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_cancel_requested_event_attributes"):
            requested = True
        elif requested and event.HasField("workflow_task_completed_event_attributes"):
            return True
    return False


class ActivityRun(NamedTuple):
    """One activity as the history records it: name, last attempt, how it ended."""

    name: str
    attempt: int
    outcome: str


async def why_not_retried(handle: WorkflowHandle[Any, Any]) -> dict[str, str]:
    """Return, for each activity that failed for good, the server's retry state."""
    scheduled: dict[int, str] = {}
    states: dict[str, str] = {}
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attributes.activity_type.name
        elif event.HasField("activity_task_failed_event_attributes"):
            failed = event.activity_task_failed_event_attributes
            states[scheduled[failed.scheduled_event_id]] = RetryState.Name(failed.retry_state)
    return states


OUTCOMES = {
    "activity_task_completed_event_attributes": "completed",
    "activity_task_failed_event_attributes": "failed",
    "activity_task_timed_out_event_attributes": "timed_out",
    "activity_task_canceled_event_attributes": "canceled",
}


async def activity_runs(handle: WorkflowHandle[Any, Any]) -> list[ActivityRun]:
    """Return the workflow's activities in the order they were scheduled."""
    names: dict[int, str] = {}
    attempts: dict[int, int] = {}
    outcomes: dict[int, str] = {}
    async for event in handle.fetch_history_events():
        kind = event.WhichOneof("attributes") or ""
        attributes: Any = getattr(event, kind, None)
        if kind == "activity_task_scheduled_event_attributes":
            names[event.event_id] = attributes.activity_type.name
        elif kind == "activity_task_started_event_attributes":
            attempts[attributes.scheduled_event_id] = attributes.attempt
        elif kind in OUTCOMES:
            outcomes[attributes.scheduled_event_id] = OUTCOMES[kind]
    return [
        ActivityRun(name, attempts.get(event_id, 0), outcomes.get(event_id, "pending"))
        for event_id, name in sorted(names.items())
    ]
