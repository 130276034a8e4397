"""One Temporal client on one event loop, reachable from a threaded web server.

The SDK documents its client as not thread-safe and bound to the event loop it
first connected in; from any other thread, calls go to that loop through
`asyncio.run_coroutine_threadsafe`. Flask serves each request on a thread of
its own (and runs an async view on a new event loop each time, which is how
the tutorial's shared client goes wrong: sdk-python #147). So the process owns
one loop, in one background thread, and one client on it; every request hands
its Temporal calls to that loop.
"""

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Self, TypeVar

from temporalio.client import Client

T = TypeVar("T")

RECONNECT_PAUSE = 2.0
"""Seconds after a failed connect before the next attempt."""


class TemporalUnavailable(Exception):
    """Temporal could not be reached to connect."""


class TemporalGateway:
    """One client on one loop thread; `call` runs a coroutine on it from any thread."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Client]],
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
    ) -> None:
        self._connect = connect
        self._loop = loop
        self._thread = thread
        self._client: Client | None = None
        self._connecting = asyncio.Lock()  # bound to the loop on first use
        self._down_until = 0.0

    @classmethod
    def start(cls, connect: Callable[[], Awaitable[Client]]) -> Self:
        """Start the loop thread; the client connects on the first call.

        Connecting on demand lets the API start, and answer 503, while
        Temporal is down, and connect once it is back.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="temporal-loop", daemon=True)
        thread.start()
        return cls(connect, loop, thread)

    def call(self, fn: Callable[[Client], Coroutine[Any, Any, T]], timeout: float = 60) -> T:
        """Run `fn(client)` on the client's loop; wait for its result up to `timeout` s."""

        async def on_loop() -> T:
            return await fn(await self._connected())

        future = asyncio.run_coroutine_threadsafe(on_loop(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TemporalUnavailable(f"no answer from Temporal within {timeout:.0f} s") from None

    def close(self) -> None:
        """Stop the loop thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _connected(self) -> Client:
        async with self._connecting:
            if self._client is None:
                # After a failed connect, requests queued behind it fail at once
                # for a moment rather than each waiting out a connect of its own.
                if time.monotonic() < self._down_until:
                    raise TemporalUnavailable("Temporal was unreachable a moment ago")
                try:
                    self._client = await self._connect()
                except RuntimeError as err:  # the SDK's "Failed client connect"
                    self._down_until = time.monotonic() + RECONNECT_PAUSE
                    raise TemporalUnavailable(str(err)) from err
            return self._client
