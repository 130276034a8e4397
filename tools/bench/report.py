"""The benchmark's results as data: each scenario's ratios to its floor, and the targets."""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from api.settings import SPARE_THREADS, ApiSettings
from tools.bench.measuring import Measure


def report(
    measures: list[Measure],
    memory_mib: dict[str, dict[str, float]],
    serving: ApiSettings,
    args: argparse.Namespace,
    tracing: dict[str, Any],
) -> dict[str, Any]:
    """Return the results as JSON-ready data: each scenario's ratios to its floor, the targets.

    `tracing`: what the collector received from the traced stack, per booking.
    """
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
        "tracing": tracing,
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
    """One of the targets, and how this run measured against it."""

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
    """Return the targets as this run measured them."""
    at = {(r["scenario"], r["concurrency"]): r for r in rows}
    c, demo = args.concurrency, args.demo_concurrency
    book_rows = [r for r in rows if r["scenario"].endswith("POST /book")]
    api_cpu = max(r["cpu_ms_per_booking"]["api"] for r in book_rows)
    floor_1, reference_1 = at["floor", 1], at["floor, sandbox off", 1]
    floor_c, reference_c = at["floor", c], at["floor, sandbox off", c]
    untraced, traced = at["demo POST /book", demo], at["demo POST /book, traced", demo]
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
        Target.check(
            f"traced at {demo}: worker+providers+API CPU x untraced's",
            TRACING_CPU_LIMIT,
            tracing_cpu(traced) / tracing_cpu(untraced),
            at_most=True,
        ),
    ]


TRACING_CPU_LIMIT = 1.5
"""What tracing may cost: the CPU per booking of the processes that trace, x untraced."""

TRACING_PROCESSES = ("worker", "providers", "api")
"""The processes that make and export spans; the server only carries their context."""


def tracing_cpu(row: dict[str, Any]) -> float:
    """Return a row's CPU per booking, ms, summed over the processes that trace."""
    return float(sum(row["cpu_ms_per_booking"][name] for name in TRACING_PROCESSES))
