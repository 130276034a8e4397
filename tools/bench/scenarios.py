"""The benchmark's run: its stacks and scenarios, a warm-up, then rounds of measures."""

import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from api.settings import ApiSettings
from tools.bench.bookings import Booking, connect_per_request, floor, http
from tools.bench.collector import Collector, Received
from tools.bench.measuring import Measure, measure
from tools.bench.report import report
from tools.bench.stacks import STACKS, TRACED_STACKS, Stack, open_api_env
from tools.bench.usage import peak_rss_mib


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
    settles: bool = False
    """True (the demo's rows, traced or not): its CPU is read once the collector
    has settled, so a traced row's CPU includes its last exports, and the next
    row does not share the machine with them."""


async def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Start the collector and the stacks, warm up, measure in rounds; return the results."""
    stacks: dict[str, Stack] = {}
    collector = Collector()
    pool = ThreadPoolExecutor(max(args.concurrency, args.demo_concurrency, 1))
    try:
        for name, options in STACKS.items():  # one by one, so a failed start stops the rest
            endpoint = collector.url if name in TRACED_STACKS else None
            stacks[name] = Stack(scratch / name, otlp_endpoint=endpoint, **options)
        scenarios = await define_scenarios(args, stacks, pool)
        for scenario in scenarios.values():  # warm-up: caches, connections, JIT-free paths
            await measure(scenario.book, args.warmup, 5, {}, Measure("warm-up", 5))
        await collector.quiet()  # the warm-up's spans all in before the first row
        results = {
            (name, concurrency): Measure(name, concurrency, scenario.baseline)
            for name, scenario in scenarios.items()
            for concurrency, _ in scenario.runs
        }
        for round_number in range(args.rounds):
            for name, scenario in scenarios.items():
                if scenario.rounds is not None and round_number >= scenario.rounds:
                    continue
                pids, settle = scenario.stack.pids(), None
                if scenario.settles:  # the collector's CPU beside: is it a bottleneck?
                    pids, settle = {**pids, "collector": collector.pid}, collector.quiet
                for concurrency, count in scenario.runs:
                    into = results[name, concurrency]
                    await measure(scenario.book, count, concurrency, pids, into, settle)
        memory_mib = {
            stack: {name: peak_rss_mib(pid) for name, pid in stacks[stack].pids().items()}
            for stack in ("tuned", "demo", "traced demo")
        }
        spans = await collector.quiet()  # before the stop: what a stop loses is not the bench's
    finally:
        try:
            for stack in stacks.values():
                stack.stop()
        finally:
            collector.stop()
            pool.shutdown()
    measures = list(results.values())
    serving = ApiSettings.from_env(open_api_env())
    return report(measures, memory_mib, serving, args, spans_per_booking(spans, measures, args))


TRACED = {
    "demo floor, traced": "RunWorkflow:BookingWorkflow",
    "demo POST /book, traced": "POST /book",
}
"""The traced stack's scenarios, and the root span of each one's bookings' traces.

From the bench's own client (untraced), a booking's trace starts in the
worker; through the API, at its request.
"""


def spans_per_booking(
    spans: Received, measures: list[Measure], args: argparse.Namespace
) -> dict[str, Any]:
    """Return what the collector received: in all, and per booking of each traced scenario.

    A scenario's bookings are its warm-up's and its measured ones; its traces,
    those whose root is its bookings' root span. The collector's CPU per
    booking is over its measured rows alone (their exports included).
    """
    rows = []
    for scenario, root in TRACED.items():
        ran = [m for m in measures if m.scenario == scenario]
        measured = sum(len(m.latencies_ms) for m in ran)
        bookings = args.warmup + measured
        found = spans.traces_by_root.get(root, {"traces": 0, "spans": 0})
        per_booking = round(found["spans"] / bookings, 1) if bookings else 0.0
        collector_ms = sum(m.cpu.get("collector", 0.0) for m in ran) * 1000
        collector = round(collector_ms / measured, 2) if measured else 0.0
        rows.append(
            {"scenario": scenario, "root": root, "bookings": bookings, **found}
            | {"spans_per_booking": per_booking, "collector_cpu_ms_per_booking": collector}
        )
    return {**vars(spans), "rows": rows}


async def define_scenarios(
    args: argparse.Namespace, stacks: dict[str, Stack], pool: ThreadPoolExecutor
) -> dict[str, Scenario]:
    """Return every scenario, in the order they run in each round."""
    clients = {name: await Client.connect(stack.server.address) for name, stack in stacks.items()}
    tuned, demo, traced = stacks["tuned"], stacks["demo"], stacks["traced demo"]
    quick = ((1, args.sequential), (args.concurrency, args.concurrent))
    demo_runs = ((args.demo_concurrency, args.demo_bookings),)
    return {
        "floor": Scenario(floor(clients["tuned"]), tuned, quick),
        # Next to the floor: the target is a ratio of the two, so measured side by side.
        "floor, sandbox off": Scenario(floor(clients["reference"]), stacks["reference"], quick),
        "floor, unversioned": Scenario(floor(clients["unversioned"]), stacks["unversioned"], quick),
        "floor, no HTTP hop": Scenario(floor(clients["hopless"]), stacks["hopless"], quick),
        "floor, provider service": Scenario(floor(clients["service"]), stacks["service"], quick),
        "POST /book": Scenario(http(tuned.api_port, pool, poll=False), tuned, quick),
        "POST /bookings + poll": Scenario(http(tuned.api_port, pool, poll=True), tuned, quick),
        "connect per request": Scenario(connect_per_request(tuned.server.address), tuned, quick),
        "floor, in memory": Scenario(floor(clients["memory"]), stacks["memory"], quick),
        "floor, default server": Scenario(floor(clients["default"]), stacks["default"], quick),
        "demo floor": Scenario(
            floor(clients["demo"]), demo, demo_runs, "demo floor", args.demo_rounds, settles=True
        ),
        # Each traced row right after the same row untraced, and against it: what
        # tracing costs. The traced stack books as the demo's does, so that their
        # servers hold as many bookings as each other at every row.
        "demo floor, traced": Scenario(
            floor(clients["traced demo"]),
            traced,
            demo_runs,
            "demo floor",
            args.demo_rounds,
            settles=True,
        ),
        "demo POST /book": Scenario(
            http(demo.api_port, pool, poll=False),
            demo,
            demo_runs,
            "demo floor",
            args.demo_rounds,
            settles=True,
        ),
        "demo POST /book, traced": Scenario(
            http(traced.api_port, pool, poll=False),
            traced,
            demo_runs,
            "demo POST /book",
            args.demo_rounds,
            settles=True,
        ),
    }
