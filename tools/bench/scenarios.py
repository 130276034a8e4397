"""The benchmark's run: its stacks and scenarios, a warm-up, then rounds of measures."""

import argparse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from api.settings import ApiSettings
from tools.bench.bookings import Booking, connect_per_request, floor, http
from tools.bench.measuring import Measure, measure
from tools.bench.report import report
from tools.bench.stacks import STACKS, Stack, open_api_env
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
        "floor, unversioned": Scenario(floor(clients["unversioned"]), stacks["unversioned"], quick),
        "floor, no HTTP hop": Scenario(floor(clients["hopless"]), stacks["hopless"], quick),
        "floor, provider service": Scenario(floor(clients["service"]), stacks["service"], quick),
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
