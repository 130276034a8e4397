"""What operators see: the worker's and the API's metrics, and one log line per transition."""

import asyncio
import re
import time
import urllib.request
import uuid
from pathlib import Path

from flask.testing import FlaskClient
from temporalio.client import Client

from shared import BookVacationInput
from tests.support.trips import JANE, JOHN, trip
from tools.processes import WorkerProcess, free_port
from workflows import BookingWorkflow


def scrape(url: str) -> dict[str, float]:
    """Return every sample of a Prometheus endpoint, by its full name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """Return the one sample of `name` whose labels include `labels` (0 if none)."""
    found = [
        value
        for key, value in samples.items()
        if re.fullmatch(rf"{name}(\{{.*\}})?", key)
        and all(f'{label}="{value_}"' in key for label, value_ in labels.items())
    ]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


async def test_worker_metrics_and_logs_follow_the_sagas(address: str, tmp_path: Path) -> None:
    task_queue, port = f"observed-{uuid.uuid4()}", free_port()
    worker = WorkerProcess(
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "PROVIDERS_PORT": "0",
            "PROVIDERS_DIR": str(tmp_path),
            "WORKER_METRICS_ADDRESS": f"127.0.0.1:{port}",
        }
    )
    await asyncio.to_thread(worker.start)
    client = await Client.connect(address)
    booked, cancelled = trip(), trip(hotel="invalid-hotel-id")
    try:
        for booking in (booked, cancelled):
            await client.execute_workflow(
                BookingWorkflow.run, booking, id=booking.book_user_id, task_queue=task_queue
            )
        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    finally:
        worker.stop()

    assert sample(metrics, "saga_bookings", outcome="confirmed") == 1
    assert sample(metrics, "saga_bookings", outcome="cancelled") == 1
    assert sample(metrics, "saga_compensations", leg="car", outcome="released") == 1
    assert sample(metrics, "saga_compensations", leg="hotel", outcome="nothing to undo") == 1
    assert sample(metrics, "saga_compensation_duration_count") == 1
    # The SDK's own metrics come from the same endpoint (benign failures stay out of them).
    assert sample(metrics, "temporal_activity_execution_failed", activity_type="book_hotel") == 0
    assert (
        sample(metrics, "temporal_activity_execution_latency_count", activity_type="book_car") == 2
    )

    assert transitions(worker, cancelled) == [
        "event=booking leg=car",
        "event=booked leg=car step=book_car attempt=1",
        "event=booked leg=car",
        "event=booking leg=hotel",
        "event=provider-down leg=hotel step=book_hotel attempt=1",
        "event=rejected leg=hotel step=book_hotel attempt=2",
        "event=failed leg=hotel",
        "event=nothing-to-undo leg=hotel step=undo_book_hotel attempt=1",
        "event=undo-nothing-to-undo leg=hotel",
        "event=released leg=car step=undo_book_car attempt=1",
        "event=undo-released leg=car",
        "event=cancelled",
    ]


def transitions(worker: WorkerProcess, booking: BookVacationInput) -> list[str]:
    """Return one booking's saga lines, without the booking id and free-text fields."""
    mine = f"user_id={booking.book_user_id}"
    keep = ("event=", "leg=", "step=", "attempt=")
    return [
        " ".join(part for part in line.split() if part.startswith(keep))
        for line in worker.lines
        if mine in line and " saga " in f" {line}"
    ]


def test_api_metrics_count_requests_by_route_and_status(http: FlaskClient) -> None:
    http.post("/book", json=JOHN)
    http.post("/book", json=JANE)
    http.post("/book", json={})
    url = http.post("/bookings", json=JOHN).get_json()["status_url"]
    time.sleep(0.1)
    http.get(url)

    text = http.get("/metrics").get_data(as_text=True)
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }

    def count(rule: str, method: str, status: str) -> float:
        return sample(
            samples,
            "flask_http_request_duration_seconds_count",
            url_rule=rule,
            method=method,
            status=status,
        )

    assert count("/book", "POST", "200") == 2
    assert count("/book", "POST", "400") == 1
    assert count("/bookings", "POST", "202") == 1
    assert count("/bookings/<user_id>", "GET", "200") == 1
    assert not [key for key in samples if "john-doe" in key], "a booking id became a label"
