"""Workers on two machines: one provider service makes a lost answer's retry harmless.

Two `run_worker.py` processes, each with a working directory of its own (as
two machines have two disks), take bookings from one API while the car
rental loses half its answers after booking. With `PROVIDERS_URL` shared,
every booking holds one car; without it (each worker serving providers of
its own), a retry that reaches the other worker books a second car.
"""

import asyncio
import json
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from shared import Leg
from simulated.store import ProviderStore, RowStatus
from tests.support.processes import spawn, terminate
from tests.support.trips import JOHN
from tools.audit import over_http, run_audit
from tools.processes import ProviderProcess, WorkerProcess, answers, free_port, wait_until

BOOKINGS = 40
LOSING = {"SIM_HOTEL_OUTAGE": "0", "SIM_LATENCY_SECONDS": "0", "SIM_CAR_LOST_REPLY_RATE": "0.5"}


def followed(port: int, status_url: str) -> dict[str, Any]:
    """Return a booking's result once it has one (within two minutes)."""
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{status_url}", timeout=30) as got:
            result: dict[str, Any] | None = json.load(got).get("result")
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"{status_url} has no result after two minutes"
        time.sleep(0.5)


def book_all(port: int) -> list[dict[str, Any]]:
    """POST /book `BOOKINGS` times, ten at a time; return each trip's result.

    A booking still running after BOOK_WAIT_SECONDS (its car's answers lost
    again and again, on a slow machine) is answered 202: it is followed to its end.
    """

    def post(n: int) -> dict[str, Any]:
        body = json.dumps({**JOHN, "name": f"Scale {n}"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/book", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer: dict[str, Any] = json.load(response)
        return answer if response.status == 200 else followed(port, answer["status_url"])

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(post, range(BOOKINGS)))


@pytest.fixture
def machines(address: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], list[Path], int]]:
    """An API on a fresh queue; yield the workers' common env, their two disks, the API port."""
    common = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": f"scale-{uuid.uuid4()}"}
    port = free_port()
    api, _ = spawn([sys.executable, "starter.py"], {**common, "PORT": str(port)})
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")
        yield common, [tmp_path / "machine-1", tmp_path / "machine-2"], port
    finally:
        terminate(api)


def cars_by_booking(*disks: Path) -> Counter[str]:
    """Return how many cars each booking holds, over every store given."""
    return Counter(
        row.user_id
        for disk in disks
        for row in ProviderStore(Leg.CAR, disk / "car.db").rows()
        if row.status is RowStatus.HELD
    )


@pytest.mark.timeout(240)
async def test_two_workers_sharing_the_provider_service_hold_one_car_per_booking(
    machines: tuple[dict[str, str], list[Path], int], tmp_path: Path
) -> None:
    common, disks, port = machines
    service = tmp_path / "provider-service"
    providers = ProviderProcess({**LOSING, "PROVIDERS_DIR": str(service)})
    providers.start()
    workers = [
        WorkerProcess({**common, "PROVIDERS_URL": providers.url, "PROVIDERS_DIR": str(disk)})
        for disk in disks
    ]
    try:
        for worker in workers:
            worker.start()
        answered = await asyncio.to_thread(book_all, port)
        client = await Client.connect(common["TEMPORAL_ADDRESS"])
        report = await run_audit(client, over_http(providers.url), common["TEMPORAL_TASK_QUEUE"])
    finally:
        for process in (*workers, providers):
            process.stop()

    # A booking whose car answers were all lost is cancelled (its attempts used): it holds none.
    confirmed = [a["user_id"] for a in answered if not a["cancelled"]]
    assert len(confirmed) > BOOKINGS / 2
    assert cars_by_booking(service) == Counter(confirmed)
    assert report.clean, report.summary()
    assert report.held == dict.fromkeys(Leg, len(confirmed))
    for worker in workers:  # both booked cars
        assert any("event=booked" in line and "leg=car" in line for line in worker.lines)
    assert not any(disk.exists() for disk in disks)  # neither kept a store of its own


@pytest.mark.timeout(240)
async def test_without_the_service_each_worker_books_in_its_own_store_and_some_hold_two_cars(
    machines: tuple[dict[str, str], list[Path], int],
) -> None:
    common, disks, port = machines
    workers = [
        WorkerProcess({**common, **LOSING, "PROVIDERS_PORT": "0", "PROVIDERS_DIR": str(disk)})
        for disk in disks
    ]
    try:
        for worker in workers:
            worker.start()
        answered = await asyncio.to_thread(book_all, port)
    finally:
        for worker in workers:
            worker.stop()

    assert len(answered) == BOOKINGS
    assert max(cars_by_booking(*disks).values()) == 2, "the control should double-book"
