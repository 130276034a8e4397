"""One run of `make deploy`: its new workers, the switch, the watch, the put-back, the drain.

`tools/deploy.py` runs its stages in order, from the command line.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.service import RPCError

from deployment.bookings import (
    Bookings,
    drained,
    failing_since,
    left_to_people,
    pinned_to,
    started_on,
)
from deployment.versions import VersionSettings, key, polls, routing, set_current, set_ramping
from tools.children import Child
from tools.processes import ROOT

PUT_BACK_TRIES = 5
"""Tries at putting the old version back while Temporal fails them (2, 4, 6... s apart)."""

WATCH_EVERY = 2.0
"""Seconds between two looks at the deployment while a stage waits."""

STOP_TIMEOUT = 30.0
"""Seconds the new workers get to drain on Ctrl-C before SIGKILL."""


class DeployFailed(Exception):
    """The new version did not take over; the current one stays. The message says why."""


def say(stage: str) -> None:
    """Print one stage of the deploy."""
    print(f"deploy | {stage}", flush=True)


def labelled(build_id: str, line: str) -> None:
    """Print a new worker's output line behind its version."""
    print(f"{build_id} | {line}", end="", flush=True)


class Deploy:
    """One deploy: the new version, the one it replaces, and the workers it started."""

    def __init__(self, client: Client, new: VersionSettings, task_queue: str) -> None:
        self.client = client
        self.new = new.version
        self.task_queue = task_queue
        self.old: WorkerDeploymentVersion | None = None
        self.workers: list[Child] = []
        self.stop = asyncio.Event()
        self.counts = ""
        self.identity = f"make deploy ({client.identity})"

    def start_workers(self, count: int, env: Mapping[str, str]) -> None:
        """Start `count` workers of the new version; they wait to be made current."""
        worker_env = {
            **env,
            "WORKER_DEPLOYMENT_NAME": self.new.deployment_name,
            "WORKER_BUILD_ID": self.new.build_id,
            "WORKER_SET_CURRENT": "never",
            "TEMPORAL_TASK_QUEUE": self.task_queue,
        }
        relay = partial(labelled, self.new.build_id)
        for _ in range(count):
            command = [sys.executable, "run_worker.py"]
            self.workers.append(Child(command, cwd=ROOT, env=worker_env, output=relay))
        if count:
            say(f"started {count} worker(s) of {key(self.new)}")

    def stop_workers(self) -> None:
        """Stop the workers this deploy started, each draining its activities."""
        for worker in self.workers:
            try:
                worker.stop(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                say(f"a worker of {key(self.new)} did not stop in {STOP_TIMEOUT:.0f} s; killed")

    def exited(self) -> str | None:
        """Return why, if a worker this deploy started has exited."""
        if any(not worker.running for worker in self.workers):
            return f"a worker of {key(self.new)} exited"
        return None

    async def wait(self, seconds: float) -> None:
        """Sleep `seconds`; raise `DeployFailed` if interrupted meanwhile."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            return
        raise DeployFailed("interrupted")

    async def switch(self, percentage: float | None = None) -> None:
        """Send new bookings to the new version: `percentage` of them, or all (current)."""
        known = await routing(self.client, self.new.deployment_name)
        token = known.conflict_token if known else b""
        if percentage is None:
            await set_current(self.client, self.new, token, self.identity)
        else:
            await set_ramping(self.client, self.new, percentage, token, self.identity)

    async def put_back(self) -> str | None:
        """End the new version's ramp, or make the old version current again; say what stands.

        Returns None if the new version stays current (there was none before it).
        """
        known = await routing(self.client, self.new.deployment_name)
        if known is not None and known.ramping == self.new.build_id:
            await set_ramping(self.client, self.new, 0, known.conflict_token, self.identity)
        elif known is not None and known.current == self.new.build_id:
            if self.old is None:
                return None
            if await drained(self.client, self.old):
                say(f"{key(self.old)} had drained: start its workers again if they stopped")
            await set_current(self.client, self.old, known.conflict_token, self.identity)
        known = await routing(self.client, self.new.deployment_name)
        current = known.current if known else None
        again = " again" if self.old is not None and current == self.old.build_id else ""
        return f"new bookings go to {self.new.deployment_name}:{current or 'no version'}{again}"

    async def put_back_for_good(self) -> str | None:
        """`put_back`, tried again while Temporal fails it; None if the new version stays."""
        for attempt in range(PUT_BACK_TRIES):
            try:
                return await self.put_back()
            except RPCError as err:
                say(f"cannot put the old version back yet: {err.message}")
                await asyncio.sleep(2.0 * (attempt + 1))
        return None

    async def say_counts(self) -> None:
        """Print the bookings open on each version, when they have changed."""
        versions = [v for v in (self.old, self.new) if v is not None]
        counts = [f"{key(v)} {(await pinned_to(self.client, v)).count}" for v in versions]
        now = f"open bookings: {', '.join(counts)}"
        if now != self.counts:
            say(now)
            self.counts = now

    async def watch_first_bookings(self, since: datetime, seconds: float) -> None:
        """Raise `DeployFailed` if a booking started on the new version keeps failing its task."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            await self.wait(WATCH_EVERY)
            if exited := self.exited():
                raise DeployFailed(exited)
            if failing := await failing_since(self.client, self.new, self.task_queue, since):
                ids = ", ".join(failing.user_ids)
                raise DeployFailed(f"{key(self.new)} fails the workflow task of {ids}")
            await self.say_counts()
        taken = await started_on(self.client, self.new, since)
        verdict = "none failing" if taken else "nothing to judge it by"
        say(f"{key(self.new)} took {taken} booking(s) in {seconds:.0f} s, {verdict}")

    async def await_drained(
        self, version: WorkerDeploymentVersion, *, but_for_people: bool = False
    ) -> Bookings | None:
        """Return once `version` has drained, printing the open bookings as they change.

        `but_for_people`: return sooner, with them, once the bookings left all
        wait for a person. Temporal's errors are said and the look tried again:
        a drain may take as long as the longest booking.
        """
        while True:
            try:
                if await drained(self.client, version):
                    return None
                if but_for_people and (left := await left_to_people(self.client, version)):
                    return left
                await self.say_counts()
            except RPCError as err:
                say(f"cannot read the deployment ({err.message}); trying again")
            await self.wait(WATCH_EVERY)

    async def await_polls(self, within: float) -> None:
        """Return once a worker of the new version polls; `DeployFailed` if none soon, or Ctrl-C."""
        since = datetime.now(UTC)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await polls(self.client, self.new, self.task_queue, since):
            if loop.time() > deadline:
                seen = f"Temporal saw no worker of {key(self.new)} poll"
                raise DeployFailed(f"{seen} within {within:g} s")
            if exited := self.exited():
                raise DeployFailed(exited)
            await self.wait(0.2)

    async def drain_new(self) -> None:
        """After a put back: let the bookings pinned to the new version finish on its workers."""
        if self.exited() is not None or not self.workers:
            return
        say(f"the bookings {key(self.new)} took finish on it first (Ctrl-C leaves them)")
        with contextlib.suppress(DeployFailed):  # Ctrl-C
            if left := await self.await_drained(self.new, but_for_people=True):
                say(
                    f"{key(self.new)} keeps {left.count} booking(s) that wait for a person: "
                    "its workers run here until each is decided (Ctrl-C leaves them stuck)"
                )
                await self.await_drained(self.new)

    async def take_over(self, args: argparse.Namespace) -> None:
        """Ramp (if asked), switch and watch; put the old version back if any of it fails."""
        try:
            if args.ramp:
                since = datetime.now(UTC)
                await self.wait(0)  # a Ctrl-C so far stops here, before any switch
                await self.switch(args.ramp)
                say(f"ramping: {args.ramp:g} % of new bookings go to {key(self.new)}")
                await self.watch_first_bookings(since, args.ramp_for)
            since = datetime.now(UTC)
            await self.wait(0)
            await self.switch()
            say(f"{key(self.new)} is current: new bookings start on it")
            await self.watch_first_bookings(since, args.canary_for)
        except (DeployFailed, RPCError) as err:
            why = str(err) if isinstance(err, DeployFailed) else f"Temporal: {err.message}"
            self.stop.clear()  # a Ctrl-C stopped the switch; the next one stops what follows
            stands = await self.put_back_for_good()
            if stands is None:  # the new version stays current: its workers must stay
                if self.workers:
                    say(f"{key(self.new)} stays current; its worker(s) run here until Ctrl-C")
                    await self.stop.wait()
                raise DeployFailed(f"{why}; {key(self.new)} stayed current") from None
            await self.drain_new()
            raise DeployFailed(f"{why}; {stands}") from None
