"""An unversioned worker process: a changed saga deployed the old way, by a plain restart.

The negative control of tests/test_deploy.py runs it from a copy of the
project holding the changed saga.
"""

import asyncio
import signal

from temporalio.client import Client

from config import temporal_connect_config
from run_worker import WorkerSettings, build_worker, open_activities


async def main() -> None:
    """Serve the task queue unversioned until SIGINT or SIGTERM."""
    settings = WorkerSettings.from_env()
    client = await Client.connect(**temporal_connect_config())
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with build_worker(client, open_activities(settings), settings.task_queue):
        print("unversioned worker polling", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
