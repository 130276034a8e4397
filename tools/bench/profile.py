"""`make bench BENCH_ARGS=--profile`: where the worker's and the API's time goes, by py-spy."""

import argparse
import asyncio
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.bench.bookings import http
from tools.bench.measuring import Measure, measure
from tools.bench.stacks import Stack
from tools.bench.usage import descendants


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
