"""Record the golden histories that `tests/test_replay.py` replays: `make histories`.

Run it after a deliberate change to the workflow's commands (and only then),
and commit the new files together with the change, saying why in the commit.
Given names, it records only those (a new history beside the old ones, which
then show that the change still replays what the deployed version recorded).
It records what the replay tests check, so it reuses the tests' helpers.
"""

import argparse
import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from shared import Leg, Resolution, RetryUndo, search_attributes_at_start
from tests.support.histories import cancel_seen, eventually, step_cancel_requested, timers
from tests.support.trips import BrokenHotelUndo, Gate, GatedFlight, trip
from tests.support.workers import quick, running_worker
from tools.processes import ROOT, SEARCH_ATTRIBUTE_FLAGS, temporal_binary
from workflows import BookingWorkflow

HISTORIES = ROOT / "tests" / "histories"

Handle = WorkflowHandle[Any, Any]


async def start(client: Client, name: str, task_queue: str, **changes: Any) -> Handle:
    """Start the golden booking `name`: a trip, with `changes`."""
    return await client.start_workflow(
        BookingWorkflow.run,
        trip(**changes),
        id=f"golden-{name}",
        task_queue=task_queue,
        search_attributes=search_attributes_at_start("Golden Traveller"),
    )


async def gated(client: Client, scratch: Path, names: set[str]) -> dict[str, Handle]:
    """Run the bookings held at the airline's gate, or refused at the hotel."""
    activities = quick(GatedFlight, scratch / "gated")
    runs: dict[str, dict[str, Any]] = {
        "confirmed": {},
        "compensated": {"hotel": "invalid-hotel-id"},
        "cancelled": {},
        "deadline": {"deadline_seconds": 5},  # the airline answers late
    }
    handles = {}
    async with running_worker(client, activities) as task_queue:
        for name, changes in runs.items():
            if name not in names:
                continue
            activities.gate = Gate()
            handle = await start(client, name, task_queue, **changes)
            if name != "compensated":
                await activities.gate.reached.wait()
            if name == "cancelled":
                await handle.cancel()
                await eventually(lambda: cancel_seen(handle))  # noqa: B023
            if name == "deadline":
                await eventually(lambda: step_cancel_requested(handle))  # noqa: B023
            activities.gate.opened.set()
            await handle.result()
            handles[name] = handle
    return handles


async def decided(client: Client, scratch: Path, names: set[str]) -> dict[str, Handle]:
    """Run the bookings whose hotel undo kept failing, until a person decided."""
    activities = quick(BrokenHotelUndo, scratch / "broken")
    retry, resolve = BookingWorkflow.retry_undo, BookingWorkflow.resolve

    async def repaired(handle: Handle) -> None:
        await handle.execute_update(retry, RetryUndo(Leg.HOTEL, "golden-ops"))  # still broken
        activities.mended = True
        await handle.execute_update(retry, RetryUndo(Leg.HOTEL, "golden-ops"))

    async def resolved(handle: Handle) -> None:
        # A reminder, then a cancel request while it waits: each goes on waiting.
        await eventually(lambda: reminded(handle))
        await handle.cancel()
        await eventually(lambda: cancel_seen(handle))
        await handle.execute_update(resolve, Resolution(Leg.HOTEL, "by phone", "golden-ops"))

    runs: dict[str, Callable[[Handle], Awaitable[None]]] = {
        "repaired": repaired,
        "resolved": resolved,
    }
    handles = {}
    async with running_worker(client, activities) as task_queue:
        for name, decide in runs.items():
            if name not in names:
                continue
            activities.mended = False
            handle = await start(
                client,
                name,
                task_queue,
                flight="invalid-flight-id",
                undo_attempts=2,
                reminder_seconds=1,
            )
            await eventually(lambda: waits(handle))  # noqa: B023
            await decide(handle)
            await handle.result()
            handles[name] = handle
    return handles


async def reminded(handle: Handle) -> bool:
    """Whether a reminder of the booking has fired."""
    return any(ended == "fired" for _, ended in await timers(handle))


async def waits(handle: Handle) -> bool:
    """Whether the booking waits for a person."""
    return bool((await handle.query(BookingWorkflow.progress)).awaiting)


NAMES = ("confirmed", "compensated", "cancelled", "deadline", "repaired", "resolved")


async def main(names: set[str]) -> None:
    """Run each named booking to its end; save its history."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=list(SEARCH_ATTRIBUTE_FLAGS),
    )
    try:
        with tempfile.TemporaryDirectory() as scratch:
            handles = await gated(env.client, Path(scratch), names)
            handles |= await decided(env.client, Path(scratch), names)
            for name, handle in handles.items():
                history = await handle.fetch_history()
                path = HISTORIES / f"{name}.json"
                path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                print(f"wrote {path.relative_to(Path.cwd())}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"of {', '.join(NAMES)} (all by default)")
    given = set(parser.parse_args().names)
    if unknown := given - set(NAMES):
        parser.error(f"no such history: {', '.join(sorted(unknown))}")
    asyncio.run(main(given or set(NAMES)))
