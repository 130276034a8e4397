"""Timing bookings: how many a second, their latencies, and the CPU they cost each process."""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tools.bench.bookings import Booking
from tools.bench.usage import cpu_seconds


@dataclass
class Measure:
    """One scenario at one concurrency, over every round."""

    scenario: str
    concurrency: int
    baseline: str = "floor"
    """The scenario its ratios are to (the floor of the same saga)."""
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Bookings per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile(self, q: int) -> float:
        """Latency percentile `q`, in ms."""
        return statistics.quantiles(self.latencies_ms, n=100)[q - 1]


async def measure(
    book: Booking,
    count: int,
    concurrency: int,
    pids: dict[str, int],
    into: Measure,
    settle: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run `count` bookings, `concurrency` at a time; add what was seen to `into`.

    `settle`, if given, is awaited after the bookings and before the CPU is
    read: the CPU of what the processes do for them afterwards (exporting
    their last spans) is theirs; the time it takes is not the bookings'.
    """
    gate = asyncio.Semaphore(concurrency)

    async def timed() -> None:
        async with gate:
            started = time.perf_counter()
            await book()
            into.latencies_ms.append((time.perf_counter() - started) * 1000)

    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    await asyncio.gather(*(timed() for _ in range(count)))
    into.seconds += time.perf_counter() - started
    if settle is not None:
        await settle()
    for name, pid in pids.items():
        into.cpu[name] = into.cpu.get(name, 0.0) + cpu_seconds(pid) - cpu_before[name]
