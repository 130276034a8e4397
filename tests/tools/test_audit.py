"""The audit finds every way the stores and Temporal can disagree."""

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from temporalio.client import Client

from shared import (
    BOOKING_STATUS,
    BookingState,
    Compensation,
    Leg,
    LegState,
    Outcome,
    Resolution,
    UndoOutcome,
)
from simulated.store import ProviderStore
from tests.support.histories import eventually
from tests.support.providers import rows_of, stores_of
from tests.support.trips import BrokenHotelUndo, trip
from tests.support.workers import quick, quick_activities, running_worker
from tools.audit import AuditReport, check_leg, over_http, run_audit
from tools.processes import ROOT
from workflows import BookingWorkflow


class Booked(NamedTuple):
    stores: dict[Leg, ProviderStore]
    url: str
    task_queue: str
    confirmed: str
    cancelled: str


@pytest.fixture
async def booked(client: Client, tmp_path: Path) -> Booked:
    """A confirmed and a cancelled booking, audited clean."""
    activities = quick_activities(tmp_path, hotel_outage=False)
    async with running_worker(client, activities) as task_queue:
        ids = []
        for booking in (trip(), trip(flight="invalid-flight-id")):
            await client.execute_workflow(
                BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
            )
            ids.append(booking.book_user_id)
    url = activities.providers.url
    report = await run_audit(client, over_http(url), task_queue)
    assert report.clean, report.summary()
    assert report.outcomes == {Outcome.CONFIRMED: 1, Outcome.CANCELLED: 1}
    return Booked(dict(stores_of(activities.providers)), url, task_queue, *ids)


def sql(store: ProviderStore, statement: str, *args: str) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute(statement, args)


def confirmed_loses_its_car(b: Booked) -> None:
    b.stores[Leg.CAR].release(f"{b.confirmed}/car", b.confirmed)


def unknown_booking_holds_a_room(b: Booked) -> None:
    b.stores[Leg.HOTEL].reserve("ghost-000000/hotel", "ghost-000000", "valid-hotel-id")


def cancelled_still_holds_its_car(b: Booked) -> None:
    sql(
        b.stores[Leg.CAR],
        "UPDATE reservations SET status = 'held' WHERE user_id = ?",
        b.cancelled,
    )


def booking_holds_two_seats(b: Booked) -> None:
    sql(
        b.stores[Leg.FLIGHT],
        "INSERT INTO reservations (key, user_id, item_id, status) VALUES (?, ?, 'x', 'held')",
        f"{b.confirmed}/flight-again",
        b.confirmed,
    )


TAMPERING = [
    pytest.param(confirmed_loses_its_car, "confirmed but holds no car", id="lost_reservation"),
    pytest.param(unknown_booking_holds_a_room, "Temporal has no such booking", id="orphan"),
    pytest.param(cancelled_still_holds_its_car, "cancelled but still holds a car", id="leak"),
    pytest.param(booking_holds_two_seats, "holds 2 flight reservations", id="double_booking"),
]


@pytest.mark.parametrize(("tamper", "violation"), TAMPERING)
async def test_audit_reports_each_broken_promise(
    client: Client, booked: Booked, tamper: Callable[[Booked], None], violation: str
) -> None:
    tamper(booked)

    report = await run_audit(client, over_http(booked.url), booked.task_queue)

    assert not report.clean
    assert any(violation in found for found in report.violations), report.violations


async def test_audit_reports_a_booking_running_too_long(client: Client, tmp_path: Path) -> None:
    nobody_polls = f"nobody-{uuid.uuid4()}"
    booking = trip()
    handle = await client.start_workflow(
        BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=nobody_polls
    )
    stores = rows_of(ProviderStore.open_all(tmp_path))
    try:
        fresh = await run_audit(client, stores, nobody_polls, stuck_after=timedelta(minutes=1))
        stuck = await run_audit(client, stores, nobody_polls, stuck_after=timedelta(0))
    finally:
        await handle.terminate("test over")

    assert fresh.clean
    assert fresh.outcomes == {"running": 1}
    assert [v for v in stuck.violations if "stuck" in v] != []


async def test_a_booking_that_waits_for_a_person_is_listed_and_what_nobody_waits_on_is_not(
    client: Client, tmp_path: Path
) -> None:
    activities = quick(BrokenHotelUndo, tmp_path, hotel_outage=False)
    booking = trip(flight="invalid-flight-id", undo_attempts=1)
    stores = stores_of(activities.providers)
    async with running_worker(client, activities) as task_queue:
        handle = await client.start_workflow(
            BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
        )
        await eventually(lambda: visibly_waiting(client, booking.book_user_id))
        waiting = await run_audit(client, rows_of(stores), task_queue, stuck_after=timedelta(0))
        # A person says the room was released, but it was not: the store still holds it.
        await handle.execute_update(BookingWorkflow.resolve, Resolution(Leg.HOTEL, "gone", "ops"))
        await handle.result()
        resolved = await run_audit(client, rows_of(stores), task_queue)

    assert waiting.clean, waiting.summary()
    assert waiting.outcomes == {Outcome.NEEDS_ATTENTION: 1}
    assert [item.split(" since ")[0] for item in waiting.needs_attention] == [
        f"{booking.book_user_id}: hotel held, waits for a person"
    ]
    assert resolved.violations == [
        f"{booking.book_user_id}: still holds a hotel that ops resolved by hand (gone)"
    ]


def test_a_cancelled_booking_still_holding_a_leg_that_needed_attention_is_a_violation() -> None:
    # As an older version left it: completed, its undo needing attention, nobody waiting.
    state = BookingState("jane-smith-000001", [LegState(leg, f"{leg}-id") for leg in Leg])
    state.outcome = Outcome.CANCELLED
    state.compensations = [Compensation(Leg.CAR, UndoOutcome.NEEDS_ATTENTION, "down")]
    report = AuditReport()

    check_leg("jane-smith-000001", state, Leg.CAR, True, report)

    assert report.needs_attention == []
    assert report.violations == [
        "jane-smith-000001: cancelled but still holds a car that nobody waits on (down)"
    ]


async def visibly_waiting(client: Client, user_id: str) -> bool:
    described = await client.get_workflow_handle(user_id).describe()
    return described.typed_search_attributes.get(BOOKING_STATUS) == Outcome.NEEDS_ATTENTION


def audit_command(address: str, booked: Booked) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tools.audit", "--task-queue", booked.task_queue]
    return subprocess.run(
        [*command, "--providers-url", booked.url],
        cwd=ROOT,
        env={**os.environ, "TEMPORAL_ADDRESS": address},
        capture_output=True,
        text=True,
        check=False,
    )


async def test_audit_command_prints_the_summary_and_exits_1_on_a_violation(
    address: str, booked: Booked
) -> None:
    clean = await asyncio.to_thread(audit_command, address, booked)
    confirmed_loses_its_car(booked)
    broken = await asyncio.to_thread(audit_command, address, booked)

    assert (clean.returncode, broken.returncode) == (0, 1)
    assert clean.stdout.splitlines() == [
        "bookings: 2 (cancelled 1, confirmed 1)",
        "reservations held: car 1, hotel 1, flight 1",
        "needs attention: 0",
        "violations: 0",
        "audit clean",
    ]
    assert f"  {booked.confirmed}: confirmed but holds no car" in broken.stdout.splitlines()
    assert broken.stdout.splitlines()[-1] == "AUDIT FAILED"
