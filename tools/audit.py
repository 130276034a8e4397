"""The audit behind `make audit`: every booking in Temporal against every provider's reservations.

It checks the saga's promise, never a partial trip and never a double booking:
a confirmed booking holds exactly one reservation per leg; a cancelled one
holds none; one that waits for a person holds only the legs it waits on
(listed, expected: a person decides); no key and no booking holds two
reservations in one store; no reservation belongs to a booking Temporal does
not know; no booking has been running too long, but for waiting ones. It
reads the providers as anyone else must, over HTTP (`GET /<leg>/reservations`),
with an operator's key where the providers take keys.
"""

import argparse
import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http import HTTPStatus
from typing import Any

import aiohttp
from pydantic import TypeAdapter
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.service import RPCError

from config import temporal_connect_config
from providers import DEFAULT_PORT
from shared import BOOKING_STATUS, BookingState, Leg, Outcome, UndoOutcome
from simulated.store import Row, RowStatus
from tools.processes import exit_at_once
from workflows import BookingWorkflow

Rows = Mapping[Leg, Sequence[Row]]
"""Every row of each provider's store."""

RowsReader = Callable[[], Awaitable[Rows]]
"""Reads the providers' rows, once the bookings have been read."""

ROWS = TypeAdapter(list[Row])
READ_TIMEOUT = aiohttp.ClientTimeout(total=30)


class AuditError(Exception):
    """The providers' reservations cannot be read."""


@dataclass
class AuditReport:
    """What the audit found."""

    outcomes: Counter[str] = field(default_factory=Counter)
    held: Counter[Leg] = field(default_factory=Counter)
    needs_attention: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Return whether the audit found no violation."""
        return not self.violations

    def summary(self) -> str:
        """Return the report as a person reads it."""
        outcomes = ", ".join(f"{name} {n}" for name, n in sorted(self.outcomes.items()))
        held = ", ".join(f"{leg} {self.held[leg]}" for leg in Leg)
        lines = [
            f"bookings: {self.outcomes.total()} ({outcomes or 'none'})",
            f"reservations held: {held}",
            f"needs attention: {len(self.needs_attention)}",
            *(f"  {item}" for item in self.needs_attention),
            f"violations: {len(self.violations)}",
            *(f"  {item}" for item in self.violations),
            "audit clean" if self.clean else "AUDIT FAILED",
        ]
        return "\n".join(lines)


Booking = BookingState | str
"""A booking's result, or the status of a booking that has none ("running", "terminated")."""


async def read_bookings(
    client: Client, query: str, stuck_after: timedelta, report: AuditReport
) -> dict[str, Booking]:
    """Return each booking by id."""
    bookings: dict[str, Booking] = {}
    now = datetime.now(UTC)
    async for execution in client.list_workflows(query):
        handle = client.get_workflow_handle(execution.id, result_type=BookingState)
        status, attributes = execution.status, execution.typed_search_attributes
        if status == WorkflowExecutionStatus.RUNNING:
            # Visibility lags a little behind: ask the workflow itself.
            described = await handle.describe()
            status, attributes = described.status, described.typed_search_attributes
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            bookings[execution.id] = result
            report.outcomes[result.outcome] += 1
            continue
        if status == WorkflowExecutionStatus.RUNNING and (
            attributes.get(BOOKING_STATUS) == Outcome.NEEDS_ATTENTION
        ):
            bookings[execution.id] = await waiting(handle, report)
            report.outcomes[Outcome.NEEDS_ATTENTION] += 1
            continue
        bookings[execution.id] = name = status.name.lower() if status else "unknown"
        report.outcomes[name] += 1
        if status == WorkflowExecutionStatus.RUNNING and now - execution.start_time > stuck_after:
            since = f"{execution.start_time:%Y-%m-%d %H:%M:%S}"
            report.violations.append(f"{execution.id}: stuck, running since {since}")
    return bookings


async def waiting(handle: WorkflowHandle[Any, BookingState], report: AuditReport) -> Booking:
    """Return the state of a booking that waits for a person: which legs, since when."""
    try:
        return await handle.query(BookingWorkflow.progress)
    except (WorkflowQueryFailedError, RPCError):
        report.needs_attention.append(f"{handle.id}: waits for a person; no worker said for what")
        return "running"


async def read_rows(url: str, key: str = "") -> Rows:
    """Ask each provider at `url` for every row of its store (with `key`, an operator's)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    rows: dict[Leg, list[Row]] = {}
    async with aiohttp.ClientSession(timeout=READ_TIMEOUT, headers=headers) as session:
        for leg in Leg:
            async with session.get(f"{url.rstrip('/')}/{leg}/reservations") as response:
                if response.status != HTTPStatus.OK:
                    said = await response.text()
                    raise AuditError(f"the {leg} provider answered {response.status}: {said}")
                try:
                    said = await response.json(content_type=None)
                    rows[leg] = ROWS.validate_python(said["reservations"])
                except (ValueError, KeyError, TypeError) as err:  # not the providers' JSON
                    raise AuditError(f"the {leg} provider's reservations cannot be read") from err
    return rows


def over_http(url: str, key: str = "") -> RowsReader:
    """Return the reader of the providers' rows at `url`."""
    return partial(read_rows, url, key)


def check_stores(bookings: dict[str, Booking], stores: Rows, report: AuditReport) -> None:
    """Check every store's rows against the bookings' outcomes."""
    for leg, rows in stores.items():
        held = [row for row in rows if row.status is RowStatus.HELD]
        report.held[leg] = len(held)
        for key, count in Counter(row.key for row in rows).items():
            if count > 1:
                report.violations.append(f"{key}: {count} rows under one key in the {leg} store")
        for user_id, count in Counter(row.user_id for row in held).items():
            if count > 1:
                report.violations.append(f"{user_id}: holds {count} {leg} reservations")
        holders = {row.user_id for row in held}
        for user_id in holders - bookings.keys():
            report.violations.append(f"{user_id}: holds a {leg} but Temporal has no such booking")
        for user_id, state in bookings.items():
            check_leg(user_id, state, leg, user_id in holders, report)


def check_leg(user_id: str, state: Booking, leg: Leg, holds: bool, report: AuditReport) -> None:
    """Check that one booking holds one leg exactly when its outcome says it should."""
    if isinstance(state, str):  # no result: fine while running, a partial trip after
        if state != "running" and holds:
            report.violations.append(f"{user_id}: {state} but still holds a {leg}")
        return
    if state.outcome is Outcome.CONFIRMED and not holds:
        report.violations.append(f"{user_id}: confirmed but holds no {leg}")
    if state.outcome not in (Outcome.CANCELLED, Outcome.NEEDS_ATTENTION) or not holds:
        return
    undo = state.undo_of(leg)
    if (
        state.outcome is Outcome.NEEDS_ATTENTION
        and undo
        and undo.outcome is UndoOutcome.NEEDS_ATTENTION
    ):
        since = f"{undo.since:%Y-%m-%d %H:%M:%S}" if undo.since else "now"
        report.needs_attention.append(
            f"{user_id}: {leg} held, waits for a person since {since} ({undo.error})"
        )
    elif undo is not None and undo.outcome is UndoOutcome.RESOLVED:
        report.violations.append(
            f"{user_id}: still holds a {leg} that {undo.decided_by} resolved by hand ({undo.note})"
        )
    elif undo is not None and undo.outcome is UndoOutcome.NEEDS_ATTENTION:
        report.violations.append(
            f"{user_id}: cancelled but still holds a {leg} that nobody waits on ({undo.error})"
        )
    else:
        report.violations.append(f"{user_id}: {state.outcome} but still holds a {leg}")


async def run_audit(
    client: Client,
    read: RowsReader,
    task_queue: str | None = None,
    stuck_after: timedelta = timedelta(minutes=10),
) -> AuditReport:
    """Audit every BookingWorkflow (on `task_queue`, if given) against the rows `read` returns.

    The bookings are read first: a reservation made meanwhile is one whose
    booking Temporal already knows.
    """
    query = "WorkflowType = 'BookingWorkflow'"
    if task_queue:
        query += f" AND TaskQueue = '{task_queue}'"
    report = AuditReport()
    bookings = await read_bookings(client, query, stuck_after, report)
    check_stores(bookings, await read(), report)
    return report


async def main(argv: list[str] | None = None) -> int:
    """Run the audit from the command line; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--providers-url",
        default=os.environ.get("PROVIDERS_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
        help="the provider service (PROVIDERS_URL; http://127.0.0.1:3001)",
    )
    parser.add_argument("--task-queue", help="audit only the bookings on this task queue")
    parser.add_argument(
        "--stuck-after", type=float, default=600, help="seconds a booking may run (600)"
    )
    args = parser.parse_args(argv)
    client = await Client.connect(**temporal_connect_config())
    read = over_http(args.providers_url, os.environ.get("OPERATOR_API_KEY", ""))
    stuck_after = timedelta(seconds=args.stuck_after)
    try:
        report = await run_audit(client, read, args.task_queue, stuck_after)
    except (AuditError, aiohttp.ClientError, TimeoutError) as err:
        print(f"make audit: cannot read the providers at {args.providers_url}: {err}")
        return 2
    print(report.summary())
    return 0 if report.clean else 1


if __name__ == "__main__":
    exit_at_once(asyncio.run(main()))
