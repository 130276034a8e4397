"""Fail fast while Temporal is unreachable: a circuit breaker that probes on its own.

Left to itself, every call to an unreachable Temporal waits out the SDK's
retries (15-20 s), holding a request thread each. Once one call has found
Temporal unreachable, the breaker is open: requests answer 503 at once, and
bookings waiting for their outcome stop waiting. A probe on the client's loop
asks Temporal's health every `PROBE_INTERVAL`; the first answer closes the
breaker, so bookings go through again without restarting the API. Requests
never serve as probes: a probe against a frozen server would hold its
request for the whole timeout.

Everything here runs on the client's loop (`api/loop.py`), so needs no lock.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("api.breaker")

PROBE_INTERVAL = 0.5
"""Seconds between two health checks while the breaker is open."""

PROBE_TIMEOUT = 1.0
"""Seconds a health check may take before it counts as no answer."""


class Breaker:
    """Whether Temporal was last found unreachable, and the probe that watches for its return."""

    def __init__(self, healthy: Callable[[], Awaitable[bool]]) -> None:
        """Watch Temporal with `healthy`, an RPC that is True when Temporal serves."""
        self._healthy = healthy
        self._probe: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one
        self._open = False
        self._deadlines: set[asyncio.Timeout] = set()

    @property
    def is_open(self) -> bool:
        """Whether requests should answer 503 without calling Temporal."""
        return self._open

    def trip(self, reason: BaseException) -> None:
        """Open the breaker after a call found Temporal unreachable; start the probe."""
        if self.is_open:
            return
        log.warning("Temporal unreachable (%r): answering 503 until it answers again", reason)
        self._open = True
        loop = asyncio.get_running_loop()
        for deadline in self._deadlines:
            deadline.reschedule(loop.time())
        self._probe = loop.create_task(self._watch(), name="temporal-probe")

    @contextmanager
    def cutting_short(self, deadline: asyncio.Timeout) -> Iterator[None]:
        """Within this, the breaker's opening brings `deadline` forward to now.

        For a wait that has nothing to gain once Temporal is unreachable: it
        ends at once, as if its time were up.
        """
        self._deadlines.add(deadline)
        try:
            yield
        finally:
            self._deadlines.discard(deadline)

    async def _watch(self) -> None:
        while True:
            if await self._answers():
                break
            await asyncio.sleep(PROBE_INTERVAL)
        self._open = False
        log.info("Temporal answers again: taking requests")

    async def _answers(self) -> bool:
        # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
        # cancellation that lands as the call ends, and the probe would outlive
        # the loop's close.
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                return await self._healthy()
        except Exception:  # refused, reset, timed out, not connected: each means "no"
            return False
