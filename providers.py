"""The simulated car rental, hotel and airline, as one HTTP service: `python providers.py`.

Each provider keeps its reservations in a store of its own (`simulated/store.py`)
and answers book and undo under the booking's idempotency key
(`simulated/service.py`), misbehaving as the `SIM_*` variables say
(`simulated/faults.py`). Run on its own, it serves on `PROVIDERS_PORT` (3001)
until SIGINT or SIGTERM, letting calls in flight finish; every worker that
sets `PROVIDERS_URL` to it shares it. A worker without `PROVIDERS_URL` serves
it in its own process instead (`serve`).
"""

import asyncio
import errno
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from api.access import ApiKeys, read_keys
from config import PROJECT_DIR, ConfigError, number_from_env
from simulated.faults import Simulation
from simulated.service import create_app
from simulated.store import ProviderStore
from tracing.instrument import trace_aiohttp
from tracing.provider import start_tracing

log = logging.getLogger("providers")

DEFAULT_PORT = 3001

DRAIN_SECONDS = 10.0
"""On SIGINT/SIGTERM, how long calls in flight may take to finish (workers wait 5 s for one)."""


@dataclass(frozen=True)
class ProviderSettings:
    """Where the providers listen, where they keep their stores, and how they misbehave."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    """0: any free port (the tests' choice)."""
    directory: Path = PROJECT_DIR / ".providers"
    simulation: Simulation = field(default_factory=Simulation)
    keys_file: Path | None = None
    """API_KEYS_FILE: the reservations' read is for operators' keys; None: open."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "ProviderSettings":
        """Read PROVIDERS_HOST, PROVIDERS_PORT, PROVIDERS_DIR, API_KEYS_FILE and SIM_*."""
        keys_file = env.get("API_KEYS_FILE")
        return cls(
            host=env.get("PROVIDERS_HOST", cls.host),
            port=number_from_env(env, "PROVIDERS_PORT", int, cls.port, low=0, high=65535),
            directory=Path(env.get("PROVIDERS_DIR", cls.directory)),
            simulation=Simulation.from_env(env),
            keys_file=Path(keys_file) if keys_file else None,
        )

    def keys(self) -> ApiKeys | None:
        """Return the keys that may read every reservation; None: anyone may."""
        return read_keys(self.keys_file) if self.keys_file else None


def build_app(settings: ProviderSettings) -> web.Application:
    """Return the providers' app over the stores in `settings.directory`."""
    simulation = settings.simulation
    stores = ProviderStore.open_all(settings.directory, simulation.stock())
    return create_app(simulation, stores, settings.keys())


@asynccontextmanager
async def serve(settings: ProviderSettings) -> AsyncIterator[str]:
    """Serve the providers on the running loop; yield their URL.

    Raises:
        ConfigError: the port is taken (another process serves providers there).

    """
    runner = web.AppRunner(build_app(settings), access_log=None, shutdown_timeout=DRAIN_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        where = f"{settings.host}:{settings.port}"
        if err.errno != errno.EADDRINUSE:
            raise ConfigError(f"cannot serve the providers on {where}: {err}") from None
        raise ConfigError(
            f"cannot serve the providers on {where}: the port is taken. For several workers, "
            "run `python providers.py` on its own and give each worker PROVIDERS_URL "
            "(docs/providers.md)"
        ) from None
    try:
        yield url_of(runner)
    finally:
        await runner.cleanup()


def url_of(runner: web.AppRunner) -> str:
    """Return the URL this machine reaches a runner's first site at (loopback for a wildcard)."""
    host, port = runner.addresses[0][:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


async def main() -> None:
    """Serve the providers until SIGINT or SIGTERM, then let calls in flight finish."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = ProviderSettings.from_env()
    if start_tracing("trip-booking-providers"):
        trace_aiohttp()  # each call's server span, under the worker's client span
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(settings) as url:
        log.info(
            "Providers (car, hotel, flight) serving on %s, stores in %s; Ctrl-C to stop",
            url,
            settings.directory,
        )
        await stop.wait()
        log.info("Stopping: calls in flight may finish (up to %.0f s)", DRAIN_SECONDS)
    log.info("Providers stopped")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ConfigError as err:
        sys.exit(f"providers: {err}")
