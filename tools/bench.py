"""The benchmark behind `make bench`: what the HTTP layer, the sandbox and the server settings cost.

On dev servers of its own it runs the same saga several ways, interleaved in
rounds so that a noisy neighbour hurts them all alike. With the simulations
off (a saga of a few tens of ms):

- floor: `execute_workflow` straight from a Python client, no HTTP;
- POST /book, and POST /bookings then polling the status URL, through the
  API served as in production (gunicorn, the product's serving settings);
- connect-per-request: a new `Client.connect` for every booking, the pattern
  the tutorial's earlier variant shows;
- the floor again on the same tuned server in memory (what persistence costs)
  and on a default-configured dev server (what the tuning buys);
- the floor again on the reference worker, the workflow sandbox off
  (`tools/reference_worker.py`): the limit the product's worker is held to.

Each runs one at a time and at `--concurrency`. Then what `make run` runs,
the demo saga (0.3 s per provider call and the hotel down on its first
attempt: about 2 s), at `--demo-concurrency` on a stack of its own: its
floor and POST /book. All after a warm-up.

It prints a table (throughput, p50/p95/p99, CPU seconds per booking of the
server, the worker and the API, peak memory, ratios to the floor), how the
demo's sagas in flight relate to the API's processes x threads, and the
targets of issue 10 with their margins; writes JSON and draws a PNG. Only
ratios from one run mean anything on a shared machine.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path
from typing import Any

from temporalio.client import Client

from api.settings import ACCESS_VARIABLES, SPARE_THREADS, ApiSettings
from shared import BookVacationInput
from tools.processes import (
    ROOT,
    DevServer,
    WorkerProcess,
    answers,
    exit_at_once,
    free_port,
    wait_until,
)
from workflows import BookingWorkflow

QUIET_SIMULATION = {"SIM_LATENCY_SECONDS": "0", "SIM_HOTEL_OUTAGE": "0"}
DEMO_SIMULATION = {"SIM_LATENCY_SECONDS": "0.3", "SIM_HOTEL_OUTAGE": "1"}
"""`make run`'s: the Makefile's latency, and the hotel down on each first attempt."""
PRODUCT_WORKER = ("run_worker.py",)
REFERENCE_WORKER = ("-m", "tools.reference_worker")
"""The same worker with the workflow sandbox off: a tool, never the product."""
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


def open_api_env() -> dict[str, str]:
    """Return this environment as the benchmarked API gets it: open, on loopback.

    Whatever the shell exports for access (an API_KEYS_FILE would mean 401s).
    """
    return {name: value for name, value in os.environ.items() if name not in ACCESS_VARIABLES}


class Stack:
    """A dev server with its worker, and optionally the API, for the benchmark."""

    def __init__(
        self,
        directory: Path,
        api: bool,
        simulation: dict[str, str] = QUIET_SIMULATION,
        worker: tuple[str, ...] = PRODUCT_WORKER,
        **server: bool,
    ) -> None:
        directory.mkdir(parents=True)
        self.server = DevServer(directory, ui=False, **server)
        self.server.start()
        self.worker = WorkerProcess(
            {
                **simulation,
                "TEMPORAL_ADDRESS": self.server.address,
                "PROVIDERS_DIR": str(directory / "providers"),
            },
            worker,
        )
        self.worker.start()
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = free_port()
        if api:
            # The product's serving settings (processes, threads): what users run.
            self.api = subprocess.Popen(
                [sys.executable, "starter.py"],
                cwd=ROOT,
                env={
                    **open_api_env(),
                    "TEMPORAL_ADDRESS": self.server.address,
                    "PORT": str(self.api_port),
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
        """Stop everything, even if one part will not stop."""
        try:
            if self.api is not None:
                self.api.terminate()
                try:
                    self.api.wait(30)
                except subprocess.TimeoutExpired:
                    self.api.kill()
        finally:
            try:
                self.worker.stop()
            finally:
                self.server.stop()


@dataclass(frozen=True)
class Scenario:
    """One way of booking, on one stack, at the concurrencies it is measured at."""

    book: Booking
    stack: Stack
    runs: tuple[tuple[int, int], ...]
    """(concurrency, bookings per round) pairs."""
    baseline: str = "floor"
    rounds: int | None = None
    """The first rounds it runs in; None: every round."""


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


class Refused(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def http(port: int, pool: ThreadPoolExecutor, *, poll: bool) -> Booking:
    """Book through the API: POST /book, or POST /bookings then poll the status.

    Each client thread keeps its connection open between requests, as an
    HTTP client with a connection pool does.
    """
    local = threading.local()

    def exchange(method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        reused = getattr(local, "connection", None)
        connection = reused or HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection = connection
        headers = {"Content-Type": "application/json"} if data else {}
        try:
            connection.request(method, path, data, headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (RemoteDisconnected, BrokenPipeError):
            connection.close()
            local.connection = None
            if reused is None:
                raise
            # The server had closed the idle connection (no answer at all, or a
            # send refused): it never acted on this request.
            return exchange(method, path, data)

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        status, payload = exchange(method, path, data)
        if status >= 400:
            raise Refused(status)
        answer: dict[str, Any] = json.loads(payload)
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
            except Refused as err:
                if err.status != 503:  # a busy worker: ask again, as a client would
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
    stacks: dict[str, Stack] = {}
    pool = ThreadPoolExecutor(max(args.concurrency, args.demo_concurrency, 1))
    try:
        for name, options in STACKS.items():  # one by one, so a failed start stops the rest
            stacks[name] = Stack(scratch / name, **options)
        scenarios = await define_scenarios(args, stacks, pool)
        for scenario in scenarios.values():  # warm-up: caches, connections, JIT-free paths
            await measure(scenario.book, args.warmup, 5, {}, Measure("warm-up", 5))
        results = {
            (name, concurrency): Measure(name, concurrency, scenario.baseline)
            for name, scenario in scenarios.items()
            for concurrency, _ in scenario.runs
        }
        for round_number in range(args.rounds):
            for name, scenario in scenarios.items():
                if scenario.rounds is not None and round_number >= scenario.rounds:
                    continue
                for concurrency, count in scenario.runs:
                    into = results[name, concurrency]
                    await measure(scenario.book, count, concurrency, scenario.stack.pids(), into)
        memory_mib = {
            stack: {name: peak_rss_mib(pid) for name, pid in stacks[stack].pids().items()}
            for stack in ("tuned", "demo")
        }
    finally:
        for stack in stacks.values():
            stack.stop()
        pool.shutdown()
    return report(list(results.values()), memory_mib, ApiSettings.from_env(open_api_env()), args)


STACKS: dict[str, dict[str, Any]] = {
    "tuned": {"api": True},
    "memory": {"api": False, "persistent": False},
    "default": {"api": False, "persistent": False, "tuned": False},
    "reference": {"api": False, "worker": REFERENCE_WORKER},
    "demo": {"api": True, "simulation": DEMO_SIMULATION},
}
"""Each stack's options (Stack's and DevServer's): `make run`'s server unless told."""


async def define_scenarios(
    args: argparse.Namespace, stacks: dict[str, Stack], pool: ThreadPoolExecutor
) -> dict[str, Scenario]:
    """Return every scenario, in the order they run in each round."""
    clients = {name: await Client.connect(stack.server.address) for name, stack in stacks.items()}
    tuned, demo = stacks["tuned"], stacks["demo"]
    quick = ((1, args.sequential), (args.concurrency, args.concurrent))
    demo_runs = ((args.demo_concurrency, args.demo_bookings),)
    return {
        "floor": Scenario(floor(clients["tuned"]), tuned, quick),
        # Next to the floor: the target is a ratio of the two, so measured side by side.
        "floor, sandbox off": Scenario(floor(clients["reference"]), stacks["reference"], quick),
        "POST /book": Scenario(http(tuned.api_port, pool, poll=False), tuned, quick),
        "POST /bookings + poll": Scenario(http(tuned.api_port, pool, poll=True), tuned, quick),
        "connect per request": Scenario(connect_per_request(tuned.server.address), tuned, quick),
        "floor, in memory": Scenario(floor(clients["memory"]), stacks["memory"], quick),
        "floor, default server": Scenario(floor(clients["default"]), stacks["default"], quick),
        "demo floor": Scenario(
            floor(clients["demo"]), demo, demo_runs, "demo floor", args.demo_rounds
        ),
        "demo POST /book": Scenario(
            http(demo.api_port, pool, poll=False), demo, demo_runs, "demo floor", args.demo_rounds
        ),
    }


def report(
    measures: list[Measure],
    memory_mib: dict[str, dict[str, float]],
    serving: ApiSettings,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Return the results as JSON-ready data: each scenario's ratios to its floor, the targets."""
    bases = {(m.scenario, m.concurrency): m for m in measures}
    rows = []
    for m in measures:
        base = bases[m.baseline, m.concurrency]
        bookings = len(m.latencies_ms)
        rows.append(
            {
                "scenario": m.scenario,
                "concurrency": m.concurrency,
                "baseline": m.baseline,
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
        "serving": {"processes": serving.processes, "threads": serving.threads},
        "demo_in_flight": in_flight(args.demo_concurrency, serving),
        "peak_rss_mib": {
            stack: {name: round(mib, 1) for name, mib in found.items()}
            for stack, found in memory_mib.items()
        },
        "results": rows,
        "targets": [vars(target) for target in targets(rows, args)],
    }


def in_flight(sagas: int, serving: ApiSettings) -> dict[str, Any]:
    """Return how `sagas` in flight relate to the API's processes x threads.

    A waiting POST /book holds a request thread, and all but `SPARE_THREADS`
    of each process's may wait: past that, a booking is refused (503).
    """
    slots = serving.processes * serving.max_waiting
    plural = "es" if serving.processes > 1 else ""
    return {
        "sagas": sagas,
        "api_processes": serving.processes,
        "api_threads": serving.threads,
        "api_requests_waiting_at_once": slots,
        "text": f"{sagas} in flight, {serving.processes} process{plural} x "
        f"({serving.threads} - {SPARE_THREADS}) threads = {slots} may wait at once",
    }


@dataclass(frozen=True)
class Target:
    """One of issue 10's targets, and how this run measured against it."""

    target: str
    limit: float
    at_most: bool
    """True: the measure must be at most `limit`; False: at least."""
    measured: float
    margin: float
    """How far inside the limit (negative: missed by that much)."""
    holds: bool

    @classmethod
    def check(cls, target: str, limit: float, measured: float, *, at_most: bool) -> "Target":
        """Return the target with its margin."""
        margin = limit - measured if at_most else measured - limit
        return cls(target, limit, at_most, round(measured, 3), round(margin, 3), margin >= 0)


def targets(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[Target]:
    """Return issue 10's targets ("Build" 1, 4 and 5) as this run measured them."""
    at = {(r["scenario"], r["concurrency"]): r for r in rows}
    c, demo = args.concurrency, args.demo_concurrency
    book_rows = [r for r in rows if r["scenario"].endswith("POST /book")]
    api_cpu = max(r["cpu_ms_per_booking"]["api"] for r in book_rows)
    floor_1, reference_1 = at["floor", 1], at["floor, sandbox off", 1]
    floor_c, reference_c = at["floor", c], at["floor, sandbox off", c]
    return [
        Target.check(
            "POST /book one at a time: p50 - floor's, ms",
            3.0,
            at["POST /book", 1]["p50_minus_floor_ms"],
            at_most=True,
        ),
        Target.check(
            f"POST /book at {c}: x floor's throughput",
            0.95,
            at["POST /book", c]["throughput_vs_floor"],
            at_most=False,
        ),
        Target.check(
            f"demo POST /book at {demo}: x demo floor's throughput",
            0.95,
            at["demo POST /book", demo]["throughput_vs_floor"],
            at_most=False,
        ),
        Target.check("API CPU per booking, ms (worst POST /book row)", 2.0, api_cpu, at_most=True),
        Target.check(
            "floor one at a time: p50 x sandbox-off reference's",
            1.10,
            floor_1["p50_ms"] / reference_1["p50_ms"],
            at_most=True,
        ),
        Target.check(
            f"floor at {c}: throughput x sandbox-off reference's",
            0.95,
            floor_c["throughput"] / reference_c["throughput"],
            at_most=False,
        ),
    ]


def table(data: dict[str, Any]) -> str:
    """Return the results as a text table, the demo's sagas in flight, and the targets."""
    head = (
        f"{'scenario':<24}{'conc':>5}{'n':>5}{'per s':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'x floor':>8}{'Δp50':>8}  cpu ms/booking (server, worker, api)"
    )
    lines = [head, "-" * len(head)]
    for row in data["results"]:
        cpu = row["cpu_ms_per_booking"]
        cpus = ", ".join(f"{cpu[k]:.1f}" if k in cpu else "-" for k in ("server", "worker", "api"))
        lines.append(
            f"{row['scenario']:<24}{row['concurrency']:>5}{row['bookings']:>5}"
            f"{row['throughput']:>8.1f}{row['p50_ms']:>8.1f}{row['p95_ms']:>8.1f}"
            f"{row['p99_ms']:>8.1f}{row['throughput_vs_floor']:>8.3f}"
            f"{row['p50_minus_floor_ms']:>+8.1f}  {cpus}"
        )
    lines.append("(demo rows: against the demo floor; the others: against the floor)")
    lines.append(f"demo POST /book: {data['demo_in_flight']['text']}")
    for stack, found in data["peak_rss_mib"].items():
        rss = ", ".join(f"{name} {mib:.0f}" for name, mib in found.items())
        lines.append(f"peak resident memory, MiB, {stack} stack: {rss}")
    lines += ["", targets_table(data["targets"])]
    return "\n".join(lines)


def targets_table(found: list[dict[str, Any]]) -> str:
    """Return the targets block: target, measured, margin, holds."""
    head = f"{'target (issue 10)':<54}{'limit':>10}{'measured':>10}{'margin':>9}  holds"
    lines = [head, "-" * len(head)]
    for t in found:
        limit = f"{'<=' if t['at_most'] else '>='} {t['limit']:g}"
        lines.append(
            f"{t['target']:<54}{limit:>10}{t['measured']:>10.3f}{t['margin']:>+9.3f}  "
            f"{'yes' if t['holds'] else 'NO'}"
        )
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    """Draw throughput and p50 of each scenario: the quick saga above, the demo below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    quick = [r for r in rows if r["baseline"] == "floor"]
    demo = [r for r in rows if r["baseline"] == "demo floor"]
    figure, axes = plt.subplots(
        2, 2, figsize=(13, 8), gridspec_kw={"height_ratios": [3, 1]}, squeeze=False
    )
    settings = data["settings"]
    for axes_row, found, levels, what in (
        (axes[0], quick, (1, settings["concurrency"]), "quick saga"),
        (axes[1], demo, (settings["demo_concurrency"],), "demo saga"),
    ):
        if len(levels) == 1:
            what += f", {levels[0]} at a time"
        for axis, key, title in (
            (axes_row[0], "throughput", "bookings per second"),
            (axes_row[1], "p50_ms", "p50 latency, ms"),
        ):
            bars(axis, found, levels, key)
            axis.set_title(f"{what}: {title}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def bars(axis: Any, rows: list[dict[str, Any]], levels: tuple[int, ...], key: str) -> None:
    """Draw `key` of each scenario in `rows` as horizontal bars, one per concurrency."""
    names = list(dict.fromkeys(row["scenario"] for row in rows))
    height = 0.8 / len(levels)
    for n, concurrency in enumerate(levels):
        offset = (n - (len(levels) - 1) / 2) * height
        values = [
            next(r[key] for r in rows if r["scenario"] == name and r["concurrency"] == concurrency)
            for name in names
        ]
        axis.barh(
            [i + offset for i in range(len(names))],
            values,
            height=height,
            label=f"concurrency {concurrency}",
        )
    axis.set_yticks(range(len(names)), names)
    axis.invert_yaxis()
    if len(levels) > 1:  # one level is in the title
        axis.legend()


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
    # Sized so that a default run, demo included, stays under 6 minutes.
    parser.add_argument(
        "--sequential", type=int, default=25, help="bookings a round, one at a time"
    )
    parser.add_argument(
        "--concurrent", type=int, default=120, help="bookings a round, concurrently"
    )
    parser.add_argument(
        "--demo-concurrency", type=int, default=200, help="demo sagas in flight at once"
    )
    parser.add_argument(
        "--demo-bookings", type=int, default=400, help="demo bookings a round, per scenario"
    )
    parser.add_argument(
        "--demo-rounds", type=int, default=1, help="rounds the demo runs in (the first ones)"
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
    exit_at_once(main())
