"""Record the golden histories that `tests/test_replay.py` replays: `make histories`.

Run it after a deliberate change to the workflow's commands (and only then),
and commit the new files together with the change, saying why in the commit.
It records what the replay tests check, so it reuses the tests' helpers.
"""

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from shared import search_attributes_at_start
from tests.support.histories import cancel_seen, eventually, step_cancel_requested
from tests.support.trips import Gate, GatedFlight, trip
from tests.support.workers import quick, running_worker
from tools.processes import ROOT, SEARCH_ATTRIBUTE_FLAGS, temporal_binary
from workflows import BookingWorkflow

HISTORIES = ROOT / "tests" / "histories"


async def main() -> None:
    """Run a confirmed, a compensated, a cancelled and a late booking; save their histories."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_extra_args=list(SEARCH_ATTRIBUTE_FLAGS),
    )
    try:
        with tempfile.TemporaryDirectory() as scratch:
            activities = quick(GatedFlight, Path(scratch))
            client = env.client
            async with running_worker(client, activities) as task_queue:
                runs = {
                    "confirmed": trip(),
                    "compensated": trip(hotel="invalid-hotel-id"),
                    "cancelled": trip(),
                    "deadline": trip(deadline_seconds=5),  # the airline answers late
                }
                handles = {}
                for name, booking in runs.items():
                    activities.gate = Gate()
                    handle = await client.start_workflow(
                        BookingWorkflow.run,
                        booking,
                        id=f"golden-{name}",
                        task_queue=task_queue,
                        search_attributes=search_attributes_at_start("Golden Traveller"),
                    )
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
            for name, handle in handles.items():
                history = await handle.fetch_history()
                path = HISTORIES / f"{name}.json"
                path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                print(f"wrote {path.relative_to(Path.cwd())}")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    asyncio.run(main())
