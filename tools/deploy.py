"""`make deploy`: ship this checkout's saga as a new version while bookings run.

Each stage is printed as it happens (docs/operating.md, "Deploying a changed saga"):

1. start workers of the new version beside the old ones (`--workers`; 0: they
   are started elsewhere, by an orchestrator);
2. wait until Temporal sees them poll;
3. send new bookings to them: a share first if `--ramp` says so, then all;
4. watch the first bookings on the new version (`--canary-for`): one whose
   workflow task fails puts the old version back, and the command fails;
5. wait until the old version has drained, printing the bookings open on
   each version; its workers stop themselves then (`run_worker.py`). If all
   that is left on it waits for a person (a leg that needs attention), the
   deploy ends there: its workers stay up until those are decided, then stop.

The new workers it started then run in the foreground until Ctrl-C. If
the new version never shows up, or fails its first bookings, or the deploy
is interrupted or refused before the watch has passed, the current version
is left as it was (or put back) and the command says why (exit status 1);
the bookings the new version took meanwhile finish on it first.
"""

import argparse
import asyncio
import os
import signal
import sys

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError

from config import ConfigError, temporal_connect_config
from deployment.versions import POLL_SEEN_WITHIN, VersionSettings, key, routing
from shared import TASK_QUEUE_NAME
from tools.deploying import Deploy, DeployFailed, say
from tools.processes import exit_at_once


async def deploy(deployment: Deploy, args: argparse.Namespace) -> None:
    """Run the stages; raise `DeployFailed` if the new version does not take over."""
    client, new = deployment.client, deployment.new
    known = await routing(client, new.deployment_name)
    if known is not None and known.current == new.build_id:
        say(f"{key(new)} is already current: nothing to deploy")
        return
    if known is not None and known.ramping and known.ramping != new.build_id:
        raise DeployFailed(
            f"{new.deployment_name}:{known.ramping} is ramping (another deploy?): "
            "end that ramp first, with the CLI's `temporal worker deployment set-ramping-version`"
        )
    if known is not None and known.current:
        deployment.old = WorkerDeploymentVersion(new.deployment_name, known.current)
    say(f"deploying {key(new)}; current: {key(deployment.old) if deployment.old else 'none'}")
    await deployment.say_counts()
    deployment.start_workers(args.workers, os.environ)
    say(f"waiting for Temporal to see {key(new)} poll {deployment.task_queue!r}")
    await deployment.await_polls(args.poll_within)
    await deployment.take_over(args)
    if deployment.old is not None:
        old = key(deployment.old)
        try:
            left = await deployment.await_drained(deployment.old, but_for_people=True)
        except DeployFailed:
            raise DeployFailed(
                f"interrupted: {key(new)} stays current and {old} drains; "
                f"new bookings wait for workers of {key(new)}: the ones here stop now"
            ) from None
        if left:
            ids = ", ".join(left.user_ids) + (
                " and more" if left.count > len(left.user_ids) else ""
            )
            say(
                f"{old} keeps {left.count} booking(s) that wait for a person ({ids}): its "
                "workers stay up until each is decided, then stop themselves"
            )
        else:
            say(f"{old} has drained: its workers stop themselves now")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Temporal, the task queue and the deployment come from the environment "
        "(TEMPORAL_*, WORKER_DEPLOYMENT_NAME, WORKER_BUILD_ID): docs/operating.md.",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="new workers to start here; 0: started elsewhere"
    )
    parser.add_argument(
        "--poll-within",
        type=float,
        default=POLL_SEEN_WITHIN.total_seconds(),
        help="seconds the new version may take to show up (%(default)s)",
    )
    parser.add_argument("--ramp", type=float, default=0, help="percentage to ramp first; 0: none")
    parser.add_argument("--ramp-for", type=float, default=30, help="seconds of ramp (30)")
    parser.add_argument(
        "--canary-for", type=float, default=20, help="seconds to watch its first bookings (20)"
    )
    args = parser.parse_args(argv)
    seconds = (args.poll_within, args.ramp_for, args.canary_for)
    if args.workers < 0 or not 0 <= args.ramp < 100 or min(seconds) < 0:
        parser.error("--workers and the seconds must be >= 0, --ramp from 0 to below 100")
    return args


async def main(argv: list[str] | None = None) -> int:
    """Deploy; with workers started here, keep them until Ctrl-C. Return the exit status."""
    args = parse(argv)
    try:
        new = VersionSettings.from_env(os.environ)
    except ConfigError as err:
        print(f"make deploy: {err}", file=sys.stderr)
        return 2
    config = temporal_connect_config()
    try:
        client = await Client.connect(**config)
    except RuntimeError as err:
        say(f"failed: cannot reach Temporal at {config['target_host']}: {err}")
        return 1
    deployment = Deploy(client, new, os.environ.get("TEMPORAL_TASK_QUEUE", TASK_QUEUE_NAME))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, deployment.stop.set)
    try:
        await deploy(deployment, args)
        if deployment.workers:
            say(f"{key(new.version)} serves; its worker(s) run here until Ctrl-C")
            await deployment.stop.wait()
    except DeployFailed as err:
        say(f"failed: {err}")
        return 1
    except RPCError as err:
        say(f"failed: Temporal answered {err.status.name if err.status else '?'}: {err.message}")
        return 1
    finally:
        deployment.stop_workers()
    return 0


if __name__ == "__main__":
    exit_at_once(asyncio.run(main()))
