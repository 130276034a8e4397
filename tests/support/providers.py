"""The simulated providers for the tests: their real HTTP service, in a thread or a process."""

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from activities import ProviderClient
from providers import ProviderSettings, serve
from shared import Leg
from simulated.faults import Simulation
from simulated.store import ProviderStore
from tools.audit import Rows, RowsReader
from tools.processes import ProviderProcess

QUIET = {"SIM_HOTEL_OUTAGE": "0", "SIM_LATENCY_SECONDS": "0"}
"""A provider service without the tutorial's hotel outage nor latency."""


class ServedProviders:
    """The providers' HTTP service on a loopback port, served from a thread of the tests."""

    def __init__(self, directory: Path, simulation: Simulation) -> None:
        self.directory = directory
        self.stores = ProviderStore.open_all(directory)
        """The same files the service writes, for the tests to read."""
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(simulation,), daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the providers did not start"

    def _run(self, simulation: Simulation) -> None:
        async def serving() -> None:
            settings = ProviderSettings(port=0, directory=self.directory, simulation=simulation)
            async with serve(settings) as url:
                self.url = url
                self._started.set()
                await self._stop.wait()

        self._loop.run_until_complete(serving())
        self._loop.close()

    def stop(self) -> None:
        """Stop serving, letting calls in flight finish."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


RUNNING: dict[str, ServedProviders] = {}
"""Every service started by `served`, by URL: stopped as the session ends."""


def served(directory: Path, simulation: Simulation) -> ServedProviders:
    """Start the providers over the stores in `directory`; they serve until the session ends."""
    service = ServedProviders(directory, simulation)
    RUNNING[service.url] = service
    return service


CLIENTS: list[ProviderClient] = []
"""Every client `client` made, for the tests' fixture to close on the loop it ran on."""


def client(directory: Path, simulation: Simulation) -> ProviderClient:
    """Return a client of fresh providers over the stores in `directory`."""
    made = ProviderClient(served(directory, simulation).url)
    CLIENTS.append(made)
    return made


def stores_of(providers: ProviderClient) -> Mapping[Leg, ProviderStore]:
    """Return the stores of the providers a client calls."""
    return RUNNING[providers.url].stores


def stop_all() -> None:
    """Stop every service `served` started."""
    while RUNNING:
        RUNNING.popitem()[1].stop()


def rows_of(stores: Mapping[Leg, ProviderStore]) -> RowsReader:
    """Return a reader of the stores' rows, for an audit of providers a worker process serves."""

    async def read() -> Rows:
        return {leg: store.rows() for leg, store in stores.items()}

    return read


StartProviders = Callable[..., ProviderProcess]
"""Starts the service (on a port given, or a free one), with `SIM_*` faults as keywords."""


@pytest.fixture
def start_providers(tmp_path: Path) -> Iterator[StartProviders]:
    """Start provider services over this test's stores (`providers` in its `tmp_path`);
    stop each after the test."""
    started: list[ProviderProcess] = []

    def start(port: int | None = None, **faults: str) -> ProviderProcess:
        providers = ProviderProcess(
            {**QUIET, **faults, "PROVIDERS_DIR": str(tmp_path / "providers")}, port
        )
        providers.start()
        started.append(providers)
        return providers

    yield start
    for providers in started:
        providers.stop()
