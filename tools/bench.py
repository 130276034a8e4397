"""The benchmark behind `make bench`: what the HTTP layer and the server settings cost.

On dev servers of its own it runs the same saga (simulations off) several
ways, interleaved in rounds so that a noisy neighbour hurts them all alike:

- floor: `execute_workflow` straight from a Python client, no HTTP;
- POST /book, and POST /bookings then polling the status URL, through the
  API served as in production (gunicorn);
- connect-per-request: a new `Client.connect` for every booking, the pattern
  the tutorial's earlier variant shows;
- the floor again on the same tuned server in memory (what persistence costs)
  and on a default-configured dev server (what the tuning buys).

Each runs sequentially and at a given concurrency, after a warm-up. It prints
a table (throughput, p50/p95/p99, CPU seconds per booking of the server, the
worker and the API, peak memory, ratios to the floor), writes JSON and draws
a PNG. Only ratios from one run mean anything on a shared machine.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client

from shared import BookVacationInput
from tools.processes import ROOT, DevServer, WorkerProcess, answers, free_port, wait_until
from workflows import BookingWorkflow

QUIET_SIMULATION = {"SIM_LATENCY_SECONDS": "0", "SIM_HOTEL_OUTAGE": "0"}
BODY = {
    "name": "Bench",
    "attempts": 3,
    "car": "valid-car-id",
    "hotel": "valid-hotel-id",
    "flight": "valid-flight-id",
}
TICKS = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.05
"""How often a client following POST /bookings asks for the status."""

Booking = Callable[[], Awaitable[None]]


@dataclass
class Measure:
    """One scenario at one concurrency, over every round."""

    scenario: str
    concurrency: int
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


def cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process and its live descendants so far.

    gunicorn's master does no work itself: its worker processes do, and
    /proc adds a child's CPU to its parent's only once the child has exited.
    """
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone since we looked
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def descendants(pid: int) -> list[int]:
    """Return the ids of a process's live descendants."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = Path(f"/proc/{parent}/task/{parent}/children")
        kids = [int(k) for k in children.read_text().split()] if children.exists() else []
        found += kids
        todo += kids
    return found


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident memory of a process and its descendants, MiB."""
    total = 0
    for member in [pid, *descendants(pid)]:
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


class Stack:
    """A dev server with its worker, and optionally the API, for the benchmark."""

    def __init__(self, directory: Path, api: bool, **server: bool) -> None:
        directory.mkdir(parents=True)
        self.server = DevServer(directory, ui=False, **server)
        self.server.start()
        self.worker = WorkerProcess(
            {
                **QUIET_SIMULATION,
                "TEMPORAL_ADDRESS": self.server.address,
                "PROVIDERS_DIR": str(directory / "providers"),
            }
        )
        self.worker.start()
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        if api:
            self.api = subprocess.Popen(
                [sys.executable, "starter.py"],
                cwd=ROOT,
                env={
                    **os.environ,
                    "TEMPORAL_ADDRESS": self.server.address,
                    "PORT": str(self.api_port),
                    "API_THREADS": "64",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            healthy = f"http://127.0.0.1:{self.api_port}/healthz"
            wait_until(lambda: answers(healthy), self.api, "the API")

    def pids(self) -> dict[str, int]:
        """Return the processes whose CPU the benchmark counts."""
        assert self.server.process is not None
        assert self.worker.process is not None
        pids = {"server": self.server.process.pid, "worker": self.worker.process.pid}
        if self.api is not None:
            pids["api"] = self.api.pid
        return pids

    def stop(self) -> None:
        """Stop everything."""
        if self.api is not None:
            self.api.terminate()
            self.api.wait(30)
        self.worker.stop()
        self.server.stop()


def trip() -> BookVacationInput:
    """Return a booking that books."""
    booking_id = f"bench-{uuid.uuid4().hex[:12]}"
    return BookVacationInput(3, booking_id, "valid-car-id", "valid-hotel-id", "valid-flight-id")


def floor(client: Client) -> Booking:
    """Book straight from the Python client: no HTTP."""

    async def book() -> None:
        booking = trip()
        await client.execute_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue="saga-task-queue"
        )

    return book


def connect_per_request(address: str) -> Booking:
    """Connect a new client for every booking, as the tutorial's earlier variant does."""

    async def book() -> None:
        await floor(await Client.connect(address))()

    return book


def http(port: int, pool: ThreadPoolExecutor, *, poll: bool) -> Booking:
    """Book through the API: POST /book, or POST /bookings then poll the status."""
    base = f"http://127.0.0.1:{port}"

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        request = urllib.request.Request(base + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.load(response)
            return answer

    def book_sync() -> None:
        if not poll:
            assert send("POST", "/book", BODY)["cancelled"] is False
            return
        url = send("POST", "/bookings", BODY)["status_url"]
        while True:
            time.sleep(POLL_SECONDS)
            try:
                if send("GET", url)["status"] == "confirmed":
                    return
            except urllib.error.HTTPError as err:
                if err.code != 503:  # a busy worker: ask again, as a client would
                    raise

    async def book() -> None:
        await asyncio.get_running_loop().run_in_executor(pool, book_sync)

    return book


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


async def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Start the stacks, warm up, measure in rounds; return the results."""
    tuned = Stack(scratch / "tuned", api=True)
    memory = Stack(scratch / "memory", api=False, persistent=False)
    default = Stack(scratch / "default", api=False, persistent=False, tuned=False)
    stacks = [tuned, memory, default]
    pool = ThreadPoolExecutor(max(args.concurrency, 1))
    try:
        clients = [await Client.connect(stack.server.address) for stack in stacks]
        scenarios: dict[str, tuple[Booking, Stack]] = {
            "floor": (floor(clients[0]), tuned),
            "POST /book": (http(tuned.api_port, pool, poll=False), tuned),
            "POST /bookings + poll": (http(tuned.api_port, pool, poll=True), tuned),
            "connect per request": (connect_per_request(tuned.server.address), tuned),
            "floor, in memory": (floor(clients[1]), memory),
            "floor, default server": (floor(clients[2]), default),
        }
        for book, _ in scenarios.values():  # warm-up: caches, connections, JIT-free paths
            await measure(book, args.warmup, 5, {}, Measure("warm-up", 5))
        results = {(name, c): Measure(name, c) for name in scenarios for c in (1, args.concurrency)}
        for _ in range(args.rounds):
            for (name, concurrency), into in results.items():
                book, stack = scenarios[name]
                count = args.sequential if concurrency == 1 else args.concurrent
                await measure(book, count, concurrency, stack.pids(), into)
        memory_mib = {name: peak_rss_mib(pid) for name, pid in tuned.pids().items()}
    finally:
        for stack in stacks:
            stack.stop()
        pool.shutdown()
    return report(list(results.values()), memory_mib, args)


def report(
    measures: list[Measure], memory_mib: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    """Return the results as JSON-ready data, with each scenario's ratios to the floor."""
    floors = {m.concurrency: m for m in measures if m.scenario == "floor"}
    rows = []
    for m in measures:
        base = floors[m.concurrency]
        bookings = len(m.latencies_ms)
        rows.append(
            {
                "scenario": m.scenario,
                "concurrency": m.concurrency,
                "bookings": bookings,
                "throughput": round(m.throughput, 2),
                "p50_ms": round(m.percentile(50), 1),
                "p95_ms": round(m.percentile(95), 1),
                "p99_ms": round(m.percentile(99), 1),
                "throughput_vs_floor": round(m.throughput / base.throughput, 3),
                "p50_minus_floor_ms": round(m.percentile(50) - base.percentile(50), 1),
                "cpu_ms_per_booking": {
                    name: round(seconds * 1000 / bookings, 2) for name, seconds in m.cpu.items()
                },
            }
        )
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "settings": vars(args),
        "peak_rss_mib": {name: round(mib, 1) for name, mib in memory_mib.items()},
        "results": rows,
    }


def table(data: dict[str, Any]) -> str:
    """Return the results as a text table."""
    head = (
        f"{'scenario':<24}{'conc':>5}{'n':>5}{'per s':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'x floor':>8}{'Δp50':>7}  cpu ms/booking (server, worker, api)"
    )
    lines = [head, "-" * len(head)]
    for row in data["results"]:
        cpu = row["cpu_ms_per_booking"]
        cpus = ", ".join(f"{cpu[k]:.1f}" if k in cpu else "-" for k in ("server", "worker", "api"))
        lines.append(
            f"{row['scenario']:<24}{row['concurrency']:>5}{row['bookings']:>5}"
            f"{row['throughput']:>8.1f}{row['p50_ms']:>8.1f}{row['p95_ms']:>8.1f}"
            f"{row['p99_ms']:>8.1f}{row['throughput_vs_floor']:>8.3f}"
            f"{row['p50_minus_floor_ms']:>+7.1f}  {cpus}"
        )
    rss = ", ".join(f"{name} {mib:.0f}" for name, mib in data["peak_rss_mib"].items())
    lines.append(f"peak resident memory, MiB: {rss}")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """Draw throughput and p50 of each scenario, sequential and concurrent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    names = list(dict.fromkeys(row["scenario"] for row in rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for axis, key, title in (
        (left, "throughput", "bookings per second"),
        (right, "p50_ms", "p50 latency, ms"),
    ):
        for offset, concurrency in ((-0.2, 1), (0.2, data["settings"]["concurrency"])):
            values = [
                next(r[key] for r in rows if r["scenario"] == n and r["concurrency"] == concurrency)
                for n in names
            ]
            axis.barh(
                [i + offset for i in range(len(names))],
                values,
                height=0.4,
                label=f"concurrency {concurrency}",
            )
        axis.set_yticks(range(len(names)), names)
        axis.invert_yaxis()
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


async def profile(args: argparse.Namespace, scratch: Path) -> str:
    """Record the worker and the API with py-spy under concurrent POST /book load.

    Writes a flame graph (SVG) and the collapsed stacks of each next to
    `--out`; returns the top functions by own time, per process.
    """
    stack = Stack(scratch / "profiled", api=True)
    pool = ThreadPoolExecutor(args.concurrency)
    targets = {"worker": stack.pids()["worker"], "api": descendants(stack.pids()["api"])[0]}
    recorders = {}
    try:
        book = http(stack.api_port, pool, poll=False)
        await measure(book, args.warmup, 5, {}, Measure("warm-up", 5))
        for name, pid in targets.items():
            out = args.out.with_name(f"profile-{name}")
            recorders[name] = [
                await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    f"--pid={pid}",
                    f"--duration={args.profile_seconds}",
                    f"--format={fmt}",
                    f"--output={out.with_suffix(suffix)}",
                    "--nonblocking",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for fmt, suffix in (("flamegraph", ".svg"), ("raw", ".txt"))
            ]
        deadline = time.monotonic() + args.profile_seconds
        while time.monotonic() < deadline:
            await measure(book, args.concurrency, args.concurrency, {}, Measure("load", 50))
        for recorder in (r for pair in recorders.values() for r in pair):
            await recorder.wait()
    finally:
        stack.stop()
        pool.shutdown()
    return "\n\n".join(
        f"{name}: top functions by own time\n"
        + top_functions(args.out.with_name(f"profile-{name}").with_suffix(".txt"))
        for name in targets
    )


def top_functions(collapsed: Path, count: int = 12) -> str:
    """Return the functions with the most own samples in py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(samples)
        total += int(samples)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:count]
    return "\n".join(f"{100 * n / total:5.1f}%  {leaf}" for leaf, n in ranked)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON and a PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--sequential", type=int, default=30, help="bookings a round, one at a time"
    )
    parser.add_argument(
        "--concurrent", type=int, default=150, help="bookings a round, concurrently"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench")
    parser.add_argument(
        "--profile", action="store_true", help="profile worker and API under load instead"
    )
    parser.add_argument("--profile-seconds", type=int, default=20)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
            print(asyncio.run(profile(args, Path(scratch))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        data = asyncio.run(run(args, Path(scratch)))
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    plot(data, args.out.with_suffix(".png"))
    print(table(data))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
