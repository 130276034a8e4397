"""The benchmark's hopless worker: `run_worker.py`'s worker calling the stores without HTTP.

A tool, never the product: its activities open the providers' stores in
the worker's own process, as they did before the providers became a
service, so only workers on one machine could share them. `make bench` runs
the saga on it to measure what the HTTP hop costs ("floor, no HTTP hop").
It simulates no fault: the benchmark turns them all off.
"""

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from temporalio.exceptions import ApplicationError

import run_worker
from activities import BENIGN, REJECTED, BookingActivities, ProviderClient
from config import ConfigError
from shared import Leg, Reservation, UndoReport
from simulated.store import BookingRejectedError, ProviderStore


class StoreCalls(ProviderClient):
    """The providers' book and undo, called on their stores in this process."""

    def __init__(self, stores: Mapping[Leg, ProviderStore]) -> None:
        super().__init__("in-process:")
        self.stores = stores

    async def book(self, leg: Leg, key: str, user_id: str, item_id: str) -> Reservation:
        """Hold the item in `leg`'s store."""
        try:
            return await asyncio.to_thread(self.stores[leg].reserve, key, user_id, item_id)
        except BookingRejectedError as err:
            rejected = ApplicationError(
                str(err), type=REJECTED, non_retryable=True, category=BENIGN
            )
            raise rejected from None

    async def undo(self, leg: Leg, key: str, user_id: str) -> UndoReport:
        """Release what `key` holds in `leg`'s store."""
        return UndoReport(leg, await asyncio.to_thread(self.stores[leg].release, key, user_id))


@asynccontextmanager
async def store_activities(settings: run_worker.WorkerSettings) -> AsyncIterator[BookingActivities]:
    """Yield the activities over the stores in `settings.providers.directory`."""
    yield BookingActivities(StoreCalls(ProviderStore.open_all(settings.providers.directory)))


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    try:
        asyncio.run(run_worker.main(activities_from=store_activities))
    except ConfigError as err:
        sys.exit(f"hopless_worker: {err}")
