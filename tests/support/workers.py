"""Workers for the tests: the real activities, calling fresh providers over HTTP, in-process."""

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, Plugin, WorkflowHandle

from activities import BookingActivities
from deployment.stuck import Stuck, stuck
from run_worker import build_worker
from shared import TASK_QUEUE_NAME, BookingState, BookVacationInput
from simulated.faults import Simulation
from tests.support.providers import client, stores_of
from tests.support.trips import Gate
from workflows import BookingWorkflow

EXTRA_NAMESPACE = "process-tests"
"""A namespace of its own for tests that run `run_worker.py` as a process."""


A = TypeVar("A", bound=BookingActivities)


def quick(kind: type[A], directory: Path, *, hotel_outage: bool = True) -> A:
    """A test's activities class, calling fresh providers (stores in `directory`, no latency)."""
    simulation = Simulation(latency_seconds=0, hotel_outage=hotel_outage)
    return kind(client(directory, simulation))


def quick_activities(directory: Path, *, hotel_outage: bool = True) -> BookingActivities:
    """The real activities, calling fresh providers (stores in `directory`, no latency)."""
    return quick(BookingActivities, directory, hotel_outage=hotel_outage)


@asynccontextmanager
async def running_worker(client: Client, activities: BookingActivities) -> AsyncIterator[str]:
    """Run the worker on a fresh task queue; yield the queue's name."""
    task_queue = f"test-{uuid.uuid4()}"
    try:
        async with build_worker(client, activities, task_queue):
            yield task_queue
    finally:
        await activities.providers.close()


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
    address: str,
    activities: BookingActivities,
    task_queue: str = TASK_QUEUE_NAME,
    *,
    plugins: Sequence[Plugin] = (),
    max_cached_workflows: int = 1000,
) -> Iterator[asyncio.AbstractEventLoop]:
    """Run the worker in a thread with its own loop; yield that loop.

    For synchronous tests (the Flask app), which would block the test's own loop.
    `plugins` go on its client; `max_cached_workflows` as `build_worker`'s.
    """
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def run() -> None:
        client = await Client.connect(address, plugins=plugins)
        worker = build_worker(
            client, activities, task_queue, max_cached_workflows=max_cached_workflows
        )
        async with worker:
            started.set()
            await stop.wait()
        await activities.providers.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30), "worker did not start"
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def held(activities: BookingActivities) -> int:
    """Return how many reservations the activities' providers hold in all."""
    return sum(len(store.held()) for store in stores_of(activities.providers).values())


def held_by(activities: BookingActivities, user_id: str) -> dict[str, int]:
    """Return how many reservations one booking holds, by leg."""
    return {
        leg: sum(key.startswith(f"{user_id}/") for key in provider.held())
        for leg, provider in stores_of(activities.providers).items()
    }


async def until(holds: Callable[[], bool | Awaitable[bool]], what: str, within: float = 60) -> None:
    """Poll `holds` (plain or async) until true; fail naming `what` after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not await answer(holds()):
        assert asyncio.get_running_loop().time() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.5)


async def answer(held: bool | Awaitable[bool]) -> bool:
    """Return a plain or awaited answer."""
    return await held if inspect.isawaitable(held) else held


async def reported(client: Client, name: str, task_queue: str) -> list[Stuck]:
    """Return the stuck bookings once some are reported (within a minute)."""
    found: list[Stuck] = []

    async def any_found() -> bool:
        found[:] = await stuck(client, name, task_queue)
        return bool(found)

    await until(any_found, "stuck bookings reported")
    return found
