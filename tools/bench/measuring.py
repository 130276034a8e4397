"""Timing bookings: how many a second, their latencies, and the CPU they cost each process."""

import asyncio
import statistics
import time
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
    book: Booking, count: int, concurrency: int, pids: dict[str, int], into: Measure
) -> None:
    """Run `count` bookings, `concurrency` at a time; add what was seen to `into`."""
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
    for name, pid in pids.items():
        into.cpu[name] = into.cpu.get(name, 0.0) + cpu_seconds(pid) - cpu_before[name]
