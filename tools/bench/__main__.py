"""`python -m tools.bench`: the command line of `make bench`."""

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import tools.bench
from tools.bench.plot import plot
from tools.bench.profile import profile
from tools.bench.scenarios import run
from tools.bench.stacks import drop_tracing_variables
from tools.bench.table import table
from tools.processes import ROOT, exit_at_once


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON and a PNG."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description=str(tools.bench.__doc__).splitlines()[0]
    )
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
    drop_tracing_variables()  # only the traced stack traces, and only to the collector
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
