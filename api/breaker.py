"""Fail fast while Temporal is unreachable: a circuit breaker that probes on its own.

Left to itself, every call to an unreachable Temporal waits out the SDK's
retries (15-20 s), holding a request thread each. Once one call has found
Temporal unreachable (`observe`), the breaker is open: requests answer 503
at once. A probe on the client's loop asks Temporal every `PROBE_INTERVAL`;
its first answer closes the breaker, so bookings go through again without
restarting the API. Requests never serve as probes: a probe against a frozen
server would hold its request for the whole timeout.

A call that only ran out of time may have met a slow server rather than a
dead one, so bookings waiting for their outcome are cut short (`cutting_short`)
only once the probe has also gone unanswered: a slow but healthy Temporal
closes the breaker at the probe's first answer, and costs no waiting booking.

Everything here runs on the client's loop (`api/loop.py`), so needs no lock.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Self

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("api.breaker")

PROBE_INTERVAL = 0.5
"""Seconds between two probes while the breaker is open."""

PROBE_TIMEOUT = 1.0
"""Seconds a probe may take before it counts as no answer."""

UNREACHABLE_STATUSES = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
"""RPC failures that say Temporal did not answer (any other status is an answer)."""


def unreachable(err: BaseException) -> bool:
    """Return whether `err` says Temporal could not be reached (rather than refused)."""
    if isinstance(err, RPCError):
        return err.status in UNREACHABLE_STATUSES
    if isinstance(err, RuntimeError):
        # The lazily connected client's bridge raises a bare RuntimeError.
        return str(err).startswith("Failed client connect")
    return isinstance(err, TimeoutError)


class Breaker:
    """Whether Temporal was last found unreachable, and the probe that watches for its return."""

    @classmethod
    def for_client(cls, client: Client) -> Self:
        """Return a breaker probing with GetSystemInfo, which every Temporal frontend serves.

        (The SDK itself calls it on connecting; the gRPC health service, say,
        may be closed by a proxy in front of a cluster.)
        """
        request = GetSystemInfoRequest()
        timeout = timedelta(seconds=PROBE_TIMEOUT)
        return cls(
            lambda: client.workflow_service.get_system_info(request, retry=False, timeout=timeout)
        )

    def __init__(self, probe: Callable[[], Awaitable[object]]) -> None:
        """Watch Temporal with `probe`: a cheap call that any Temporal frontend answers."""
        self._call = probe
        self._probe: asyncio.Task[None] | None = None  # held: the loop keeps only a weak one
        self._open = False
        self._confirmed = False
        self._deadlines: set[asyncio.Timeout] = set()

    @property
    def is_open(self) -> bool:
        """Whether requests should answer 503 without calling Temporal."""
        return self._open

    def observe(self, err: BaseException) -> None:
        """Open the breaker if `err` says Temporal could not be reached; else nothing."""
        if self._open or not unreachable(err):
            return
        log.warning("Temporal unreachable (%r): answering 503 until it answers again", err)
        self._open = True
        self._probe = asyncio.get_running_loop().create_task(self._watch(), name="temporal-probe")

    @contextmanager
    def cutting_short(self, deadline: asyncio.Timeout) -> Iterator[None]:
        """Within this, an outage (the probe unanswered too) brings `deadline` forward to now.

        For a wait that has nothing to gain while Temporal is unreachable: it
        ends at once, as if its time were up.
        """
        self._deadlines.add(deadline)
        try:
            if self._confirmed:
                self._cut_short(deadline)
            yield
        finally:
            self._deadlines.discard(deadline)

    def _cut_short(self, deadline: asyncio.Timeout) -> None:
        # One that is already expiring refuses a new time, and needs none.
        if not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    async def _watch(self) -> None:
        while not await self._answers():
            if not self._confirmed:
                self._confirmed = True
                for deadline in list(self._deadlines):
                    self._cut_short(deadline)
            await asyncio.sleep(PROBE_INTERVAL)
        self._open = self._confirmed = False
        log.info("Temporal answers again: taking requests")

    async def _answers(self) -> bool:
        # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a
        # cancellation that lands as the call ends, and the probe would outlive
        # the loop's close.
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._call()
        except Exception as err:  # an error that Temporal sent back is an answer
            return not unreachable(err)
        return True
