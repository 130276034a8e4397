"""Tracing as the processes do it, set by OTEL_* alone: the API, the worker and the providers,
each exporting over OTLP/HTTP to a receiver this test runs; and, unset, nothing at all."""

import json
import re
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from tests.support.processes import spawn, terminate
from tests.support.spans import Receiver, named
from tests.support.trips import JANE, JOHN
from tests.support.workers import until
from tools.children import Output
from tools.processes import (
    ProviderProcess,
    WorkerProcess,
    answers,
    free_port,
    port_in_use,
    wait_until,
)

UNDOS = ("undo hotel", "undo car", "RunActivity:undo_book_hotel", "RunActivity:undo_book_car")

OTLP_PORT = 4318
"""Where an OTLP exporter sends by default: what the processes would reach were tracing on
without being asked."""


TRACING_WORDS = re.compile(r"\btrac(e|es|ing)\b|telemetry|otlp|span", re.IGNORECASE)


class Stack(NamedTuple):
    """The three processes, as `make run` starts them, and the API's port."""

    providers: ProviderProcess
    worker: WorkerProcess
    api_port: int
    api_output: Output


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


def start_stack(address: str, tmp_path: Path, env: dict[str, str]) -> tuple[Stack, Any]:
    """Start the providers, a worker calling them, and the API, all on a fresh task queue."""
    common = {**env, "TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": f"traced-{uuid.uuid4()}"}
    providers = ProviderProcess({**common, "PROVIDERS_DIR": str(tmp_path / "providers")})
    providers.start()
    worker = WorkerProcess({**common, "PROVIDERS_URL": providers.url})
    worker.start()
    port = free_port()
    api, output = spawn([sys.executable, "starter.py"], {**common, "PORT": str(port)})
    wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), api, "the API")
    return Stack(providers, worker, port, output), api


def post(port: int, path: str, body: dict[str, object], **headers: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        said: dict[str, Any] = json.load(answer)
        return said


def get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        said: dict[str, Any] = json.load(answer)
        return said


async def undo_running(handle: WorkflowHandle[Any, Any], activity_type: str) -> bool:
    """Whether an attempt of `activity_type` has started and not yet answered."""
    pending = (await handle.describe()).raw_description.pending_activities
    started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    return any(a.activity_type.name == activity_type and a.state == started for a in pending)


def sent(receiver: Receiver, user_id: str, name: str) -> bool:
    """Whether the receiver has the booking's span called `name`."""
    spans = receiver.received()
    return any(s.name == name and s.attributes.get("booking.id") == user_id for s in spans)


@pytest.mark.timeout(180)
async def test_a_worker_killed_during_an_undo_leaves_one_trace_with_no_span_twice(
    address: str, client: Client, tmp_path: Path, receiver: Receiver
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    # The car's calls take 3 s: long enough to kill the worker in the middle of its undo.
    stack, api = start_stack(address, tmp_path, {**otel, "SIM_CAR_LATENCY_SECONDS": "3"})
    try:
        started = post(stack.api_port, "/bookings", JANE)
        handle = client.get_workflow_handle(started["user_id"])
        await until(lambda: undo_running(handle, "undo_book_car"), "the car's undo running", 60)
        stack.providers.freeze()  # the undo's call hangs: the worker is killed in the middle of it
        # What ended before the kill has gone out: a kill loses what is still in the batch.
        await until(lambda: sent(receiver, started["user_id"], "undo hotel"), "the hotel's undo")
        stack.worker.kill()
        stack.providers.thaw()
        stack.worker.start()
        await handle.result()
        booking = get(stack.api_port, f"/bookings/{started['user_id']}")
    finally:
        stack.worker.stop()
        stack.providers.stop()
        terminate(api)

    assert booking["status"] == "cancelled"
    spans = [span for span in receiver.received() if span.trace_id == booking["trace_id"]]
    services = {span.service for span in spans}
    assert services == {"trip-booking-api", "trip-booking-worker", "trip-booking-providers"}
    assert len({span.span_id for span in spans}) == len(spans), "a span was exported twice"
    once = ["RunWorkflow:BookingWorkflow", "compensation", "undo hotel", "undo car"]
    once += ["StartActivity:undo_book_hotel", "StartActivity:undo_book_car"]
    assert {name: len(named(spans, name)) for name in once} == dict.fromkeys(once, 1)
    assert all(named(spans, name) for name in UNDOS), [span.name for span in spans]
    (car_undo,) = named(spans, "undo car")
    assert car_undo.attributes["booking.outcome"] == "released"
    # The killed worker's attempt never ended, so never went out: the restarted one's did.
    (attempt,) = named(spans, "RunActivity:undo_book_car")
    assert attempt.attributes["booking.attempt"] == 2
    roots = [span for span in spans if span.parent_id is None]
    assert [root.name for root in roots] == ["POST /bookings"]
    # All but the provider's side of the killed attempt's call hang under the request.
    ids = {span.span_id for span in spans}
    orphans = [span for span in spans if span.parent_id and span.parent_id not in ids]
    assert [(span.name, span.service) for span in orphans] == [
        ("POST /{leg}/undo", "trip-booking-providers")
    ]


@pytest.mark.timeout(120)
async def test_the_spans_still_in_a_batch_go_out_as_each_process_stops(
    address: str, client: Client, tmp_path: Path, receiver: Receiver
) -> None:
    # A batch every ten minutes: only stopping sends anything.
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    stack, api = start_stack(address, tmp_path, otel)
    try:
        answer = post(stack.api_port, "/book", JOHN, baggage="role=operator")
        booking = get(stack.api_port, f"/bookings/{answer['user_id']}")
        sent_before = receiver.requests
        history = await client.get_workflow_handle(answer["user_id"]).fetch_history()
    finally:
        stack.worker.stop()
        stack.providers.stop()
        terminate(api)

    assert sent_before == 0
    spans = [span for span in receiver.received() if span.trace_id == booking["trace_id"]]
    assert {span.service for span in spans} == {
        "trip-booking-api",
        "trip-booking-worker",
        "trip-booking-providers",
    }
    assert {"POST /book", "RunWorkflow:BookingWorkflow", "RunActivity:book_flight"} <= {
        span.name for span in spans
    }
    assert len(named(spans, "POST /{leg}/book")) == 4  # the car, the hotel twice, the flight
    # Only the trace crosses into the saga: the caller's baggage stays out of its history.
    (carried,) = history.events[
        0
    ].workflow_execution_started_event_attributes.header.fields.values()
    assert b"traceparent" in carried.data
    assert b"baggage" not in carried.data
    assert b"operator" not in carried.data


@pytest.mark.timeout(120)
def test_with_no_otel_variables_nothing_is_exported_or_said_about_tracing(
    address: str, tmp_path: Path
) -> None:
    if port_in_use(OTLP_PORT):
        pytest.skip(f"port {OTLP_PORT}, OTLP's default, is taken: nothing to tell tracing by")
    with_default_port = Receiver(OTLP_PORT)
    stack, api = start_stack(address, tmp_path, {})
    try:
        answer = post(stack.api_port, "/book", JANE)
        booking = get(stack.api_port, f"/bookings/{answer['user_id']}")
    finally:
        stack.worker.stop()
        stack.providers.stop()
        terminate(api)
        with_default_port.stop()

    assert answer["cancelled"]
    assert "trace_id" not in booking
    assert with_default_port.requests == 0
    said = [*stack.worker.lines, *stack.providers.lines, *stack.api_output.lines]
    assert not [line for line in said if TRACING_WORDS.search(line)]
