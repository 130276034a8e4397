"""The chaos run behind `make chaos`: bookings under random faults and crashes, then the audit.

It starts the provider service with every fault turned on and worker
processes calling it, sends a stream of bookings (some with an invalid item),
and now and then: SIGKILLs a worker (starting a new one in its place), kills
the provider service (starting it again on its port), freezes it (SIGSTOP)
past the workers' call timeout and thaws it, or restarts the Temporal server
on its SQLite file. Then it waits for every booking to end, and runs the
audit. The run passes only if every booking ended and the audit is clean.
"""

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError

from shared import BookingState, BookVacationInput
from tools.audit import AuditReport, over_http, run_audit
from tools.processes import DevServer, ProviderProcess, WorkerProcess, exit_at_once
from workflows import BookingWorkflow

FAULTS = {
    "SIM_LATENCY_SECONDS": "0.02",
    **{
        f"SIM_{leg}_{fault}": rate
        for leg in ("CAR", "HOTEL", "FLIGHT")
        for fault, rate in {
            "OUTAGE_RATE": "0.1",
            "REJECT_RATE": "0.02",
            "LOST_REPLY_RATE": "0.1",
        }.items()
    },
}
"""Every provider: down 10 % of calls, refusing 2 %, losing 10 % of its answers."""

FREEZE_SECONDS = 8.0
"""How long a frozen provider stays frozen: past the workers' 5 s call timeout."""

CRASHES = ("worker kills", "provider kills", "provider freezes", "server restarts")

T = TypeVar("T")

QUIET = Runtime(
    telemetry=TelemetryConfig(
        logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
    )
)
"""The client's runtime, without a warning per retried call while the server restarts."""


@dataclass
class ChaosPlan:
    """How much chaos to make."""

    bookings: int = 100
    concurrency: int = 20
    workers: int = 2
    worker_kills: int = 2
    provider_kills: int = 1
    provider_freezes: int = 1
    server_restarts: int = 0
    invalid_share: float = 0.1
    faults: dict[str, str] = field(default_factory=lambda: dict(FAULTS))
    seed: int = 1


@dataclass
class ChaosResult:
    """What the chaos run saw, and what the audit found."""

    outcomes: Counter[str]
    unfinished: list[str]
    crashes: Counter[str]
    audit: AuditReport

    @property
    def clean(self) -> bool:
        """Return whether every booking ended and the audit is clean."""
        return not self.unfinished and self.audit.clean

    def summary(self) -> str:
        """Return the run as a person reads it."""
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        crashes = "; ".join(f"{k}: {self.crashes[k]}" for k in CRASHES)
        return "\n".join(
            [
                f"bookings ended: {outcomes}; unfinished: {len(self.unfinished)}",
                crashes,
                self.audit.summary(),
            ]
        )


def random_trip(rng: random.Random, invalid_share: float) -> BookVacationInput:
    """Return a booking; now and then one of its items is invalid."""
    items = ["valid-car-id", "valid-hotel-id", "valid-flight-id"]
    if rng.random() < invalid_share:
        slot = rng.randrange(3)
        items[slot] = "invalid-" + items[slot].removeprefix("valid-")
    car, hotel, flight = items
    return BookVacationInput(5, f"chaos-{uuid.uuid4().hex[:12]}", car, hotel, flight)


async def run_chaos(
    plan: ChaosPlan,
    address: str,
    providers_dir: Path,
    server: DevServer | None = None,
    task_queue: str | None = None,
) -> ChaosResult:
    """Run `plan` against the server at `address`; `server` is restarted if the plan says so."""
    task_queue = task_queue or f"chaos-{uuid.uuid4().hex[:8]}"
    rng = random.Random(plan.seed)
    providers = ProviderProcess(
        {**plan.faults, "PROVIDERS_DIR": str(providers_dir), "SIM_SEED": str(plan.seed)}
    )
    env = {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": task_queue,
        "PROVIDERS_URL": providers.url,
    }
    workers = [WorkerProcess(env) for _ in range(plan.workers)]
    processes = [providers, *workers]
    try:
        for process in processes:
            await asyncio.to_thread(process.start)
    except BaseException:
        for process in processes:
            process.kill()
        raise
    client = await Client.connect(address, runtime=QUIET)
    gate = asyncio.Semaphore(plan.concurrency)

    async def book(trip: BookVacationInput) -> BookingState:
        async with gate:
            handle = await through_outages(
                lambda: start_once(client, trip, task_queue), "start " + trip.book_user_id
            )
            return await through_outages(handle.result, "await " + trip.book_user_id)

    async def crash(kind: str) -> None:
        if kind == "worker kills":
            victim = workers[crashes[kind] % len(workers)]
            victim.kill()
            await asyncio.to_thread(victim.start)
        elif kind == "provider kills":
            providers.kill()
            await asyncio.to_thread(providers.start)
        elif kind == "provider freezes":
            providers.freeze()
            try:
                await asyncio.sleep(FREEZE_SECONDS)
            finally:  # a frozen process takes no SIGTERM: never leave it so
                providers.thaw()
        elif server is not None:
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(1)
            await asyncio.to_thread(server.start)
        else:
            return  # no server of its own to restart: not counted
        crashes[kind] += 1

    # Crashes fall evenly through the stream of bookings, their kinds in a random order.
    planned = [plan.worker_kills, plan.provider_kills, plan.provider_freezes, plan.server_restarts]
    order = [kind for kind, n in zip(CRASHES, planned, strict=True) for _ in range(n)]
    rng.shuffle(order)
    crash_at = {plan.bookings * (n + 1) // (len(order) + 1): kind for n, kind in enumerate(order)}
    crashes: Counter[str] = Counter()
    bookings: dict[str, asyncio.Task[BookingState]] = {}
    try:
        for n in range(plan.bookings):
            trip = random_trip(rng, plan.invalid_share)
            bookings[trip.book_user_id] = asyncio.create_task(book(trip))
            await asyncio.sleep(0.05)
            if (kind := crash_at.get(n)) is not None:
                await crash(kind)
        await asyncio.wait(bookings.values(), timeout=180)
        outcomes, unfinished = ended(bookings)
        read = over_http(providers.url)
        report = await run_audit(client, read, task_queue, timedelta(minutes=5))
    finally:
        for process in reversed(processes):
            process.stop()
    return ChaosResult(outcomes, unfinished, crashes, report)


def ended(bookings: dict[str, asyncio.Task[BookingState]]) -> tuple[Counter[str], list[str]]:
    """Return the bookings' outcomes, and those that did not end (cancelling them)."""
    outcomes: Counter[str] = Counter()
    unfinished = []
    for user_id, task in bookings.items():
        if not task.done():
            task.cancel()
            unfinished.append(user_id)
        elif task.exception() is not None:
            unfinished.append(f"{user_id}: {task.exception()!r}")
        else:
            outcomes[task.result().outcome] += 1
    return outcomes, unfinished


async def start_once(
    client: Client, trip: BookVacationInput, task_queue: str
) -> WorkflowHandle[BookingWorkflow, BookingState]:
    """Start a booking; if an earlier try did start it (its answer lost), take that one."""
    try:
        return await client.start_workflow(
            BookingWorkflow.run, trip, id=trip.book_user_id, task_queue=task_queue
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle_for(BookingWorkflow.run, trip.book_user_id)


async def through_outages(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry `call` while the Temporal server is away (a restart), for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await call()
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def main(argv: list[str] | None = None) -> int:
    """Run a chaos run on a dev server of its own; exit 1 unless it ends clean."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-kills", type=int, default=4)
    parser.add_argument("--provider-kills", type=int, default=2)
    parser.add_argument("--provider-freezes", type=int, default=2)
    parser.add_argument("--server-restarts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    plan = ChaosPlan(
        bookings=args.bookings,
        concurrency=args.concurrency,
        workers=args.workers,
        worker_kills=args.worker_kills,
        provider_kills=args.provider_kills,
        provider_freezes=args.provider_freezes,
        server_restarts=args.server_restarts,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        server = DevServer(Path(scratch))
        server.start()
        try:
            result = await run_chaos(plan, server.address, Path(scratch) / "providers", server)
        finally:
            server.stop()
    print(result.summary())
    return 0 if result.clean else 1


if __name__ == "__main__":
    exit_at_once(asyncio.run(main()))
