"""One trace per booking: the API's request, Temporal's spans, the saga's own, every provider call.

The API and a worker run in this process, traced as `make run` traces them
(the SDK's plugin on each one's client, Flask's and aiohttp's instrumentation),
into an in-memory exporter. The worker keeps no workflow cached: every
workflow task replays the booking's history from its start, so a span the
saga made on an earlier task is made again, and must not be exported twice.
"""

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.worker import Replayer

from activities import BookingActivities, ProviderClient
from api.loop import ClientLoop
from api.settings import ApiSettings
from run_worker import WORKFLOW_RUNNER
from simulated.faults import Simulation
from starter import create_app
from tests.support.providers import served
from tests.support.spans import JANES_TRACE, Span, from_sdk, named, outline
from tests.support.trips import JANE, JOHN
from tests.support.workers import worker_thread
from tracing.instrument import temporal_plugins, trace_aiohttp, trace_flask
from workflows import BookingWorkflow

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tracing.md"


BOOKING_KEYS = ("booking.id", "temporalWorkflowID")
"""The attributes that name a booking: the saga's, and Temporal's plugin's."""

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def exported() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, Temporal's replay-safe one, keeping spans in memory.

    A process sets its provider once: it stays for the session, and its
    exporter is shut (keeping nothing more) once this module is done.
    """
    exporter = InMemorySpanExporter()
    provider = create_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    trace_aiohttp()
    yield exporter
    AioHttpClientInstrumentor().uninstrument()
    AioHttpServerInstrumentor().uninstrument()
    exporter.shutdown()


@pytest.fixture(scope="module")
def traced_api(
    exported: InMemorySpanExporter,
    address: str,
    client_loop: ClientLoop,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FlaskClient]:
    """The API, traced, and a traced worker replaying every task, on a task queue of their own."""
    task_queue = f"traced-{uuid.uuid4()}"
    providers = served(tmp_path_factory.mktemp("providers"), Simulation())
    activities = BookingActivities(ProviderClient(providers.url))
    plugins = temporal_plugins(tracing=True)
    client = client_loop.run(Client.connect(address, plugins=plugins))
    app: Flask = create_app(client, client_loop, ApiSettings(task_queue=task_queue))
    trace_flask(app)
    with worker_thread(address, activities, task_queue, plugins=plugins, max_cached_workflows=0):
        yield app.test_client()


def booked(api: FlaskClient, body: dict[str, object], **headers: str) -> tuple[str, str]:
    """Book `body`; return the booking's id and the trace id its answer names."""
    answer = api.post("/book", json=body, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["user_id"], answer.headers["Trace-Id"]


def trace_of(exporter: InMemorySpanExporter, trace_id: str, *, until: str) -> list[Span]:
    """Return the trace's spans once one called `until` has been exported (within 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        spans = [from_sdk(span) for span in exporter.get_finished_spans()]
        mine = [span for span in spans if span.trace_id == trace_id]
        if named(mine, until) or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def test_janes_booking_is_one_trace_from_the_request_to_every_provider_call(
    traced_api: FlaskClient, exported: InMemorySpanExporter
) -> None:
    user_id, trace_id = booked(traced_api, JANE)
    spans = trace_of(exported, trace_id, until="RunWorkflow:BookingWorkflow")

    assert outline(spans) == JANES_TRACE
    assert len({span.span_id for span in spans}) == len(spans)
    assert len(named(spans, "RunWorkflow:BookingWorkflow")) == 1
    # No span of the booking is left out of its trace.
    others = [
        span
        for span in exported.get_finished_spans()
        if user_id
        in {(span.attributes or {}).get(key) for key in ("booking.id", "temporalWorkflowID")}
    ]
    assert {from_sdk(span).trace_id for span in others} == {trace_id}


def test_the_spans_say_the_booking_leg_attempt_reservation_and_outcome(
    traced_api: FlaskClient, exported: InMemorySpanExporter
) -> None:
    user_id, trace_id = booked(traced_api, JANE)
    spans = trace_of(exported, trace_id, until="RunWorkflow:BookingWorkflow")
    car = traced_api.get(f"/bookings/{user_id}").get_json()["legs"]["car"]["reservation_id"]

    said = sorted(
        (
            (span.name, booking_attributes(span))
            for span in spans
            if "booking.id" in span.attributes
        ),
        key=repr,
    )
    booking = {"id": user_id}
    assert said == sorted(
        [
            ("RunActivity:book_car", of(user_id, "car", 1, "booked", reservation=car)),
            ("RunActivity:book_hotel", of(user_id, "hotel", 1, "provider-down", error=DOWN)),
            ("RunActivity:book_hotel", of(user_id, "hotel", 2, "rejected", error=REFUSED)),
            ("RunActivity:undo_book_car", of(user_id, "car", 1, "released")),
            ("RunActivity:undo_book_hotel", of(user_id, "hotel", 1, "nothing-to-undo")),
            ("compensation", {**booking, "failed_leg": "hotel"}),
            ("undo car", {**booking, "leg": "car", "reservation": car, "outcome": "released"}),
            ("undo hotel", {**booking, "leg": "hotel", "outcome": "nothing to undo"}),
        ],
        key=repr,
    )


def booking_attributes(span: Span) -> dict[str, object]:
    """Return what a span says of the booking: its `booking.*` attributes, named without it."""
    prefix = "booking."
    return {k[len(prefix) :]: v for k, v in span.attributes.items() if k.startswith(prefix)}


DOWN = "Hotel service is down"
REFUSED = "Invalid hotel booking: 'invalid-hotel-id'"


def of(user_id: str, leg: str, attempt: int, event: str, **more: str) -> dict[str, object]:
    """Return what an activity attempt's span says of its provider call."""
    return {"id": user_id, "leg": leg, "attempt": attempt, "event": event, **more}


def test_a_callers_traceparent_is_the_bookings_trace(
    traced_api: FlaskClient, exported: InMemorySpanExporter
) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    user_id, trace_id = booked(traced_api, JOHN, traceparent=traceparent)
    spans = trace_of(exported, trace_id, until="RunWorkflow:BookingWorkflow")

    assert trace_id == CALLER_TRACE
    assert traced_api.get(f"/bookings/{user_id}").get_json()["trace_id"] == CALLER_TRACE
    (request,) = named(spans, "POST /book")
    assert request.parent_id == CALLER_SPAN


@pytest.mark.parametrize(
    "traceparent",
    [
        "nonsense",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # an all-zero trace id is invalid
        f"00-{CALLER_TRACE}-{CALLER_SPAN}",  # no flags
        f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01",  # version ff is forbidden
        "00-" + "é" * 32 + f"-{CALLER_SPAN}-01",
    ],
)
def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    traced_api: FlaskClient, exported: InMemorySpanExporter, traceparent: str
) -> None:
    _, trace_id = booked(traced_api, JOHN, traceparent=traceparent)
    spans = trace_of(exported, trace_id, until="RunWorkflow:BookingWorkflow")

    assert re.fullmatch("[0-9a-f]{32}", trace_id)
    assert trace_id != CALLER_TRACE
    (request,) = named(spans, "POST /book")
    assert request.parent_id is None
    assert named(spans, "RunWorkflow:BookingWorkflow")


def test_a_caller_that_says_not_to_sample_gets_its_trace_id_and_no_span_is_kept(
    traced_api: FlaskClient, exported: InMemorySpanExporter
) -> None:
    unsampled = uuid.uuid4().hex  # a trace of its own, no other test's
    _, trace_id = booked(traced_api, JOHN, traceparent=f"00-{unsampled}-{CALLER_SPAN}-00")

    assert trace_id == unsampled
    kept = [span for span in exported.get_finished_spans() if from_sdk(span).trace_id == trace_id]
    assert kept == []


def test_a_repeat_with_the_same_idempotency_key_names_the_first_requests_trace(
    traced_api: FlaskClient,
) -> None:
    key = {"Idempotency-Key": f"trace-{uuid.uuid4()}"}
    first_id, first_trace = booked(traced_api, JOHN, **key)
    again_id, again_trace = booked(traced_api, JOHN, **key)

    assert (again_id, again_trace) == (first_id, first_trace)


@pytest.mark.parametrize(
    ("path", "traced"),
    [("/healthz", False), ("/readyz", False), ("/metrics", False), ("/healthzz", True)],
)
def test_the_probes_routes_are_not_traced(
    traced_api: FlaskClient, exported: InMemorySpanExporter, path: str, traced: bool
) -> None:
    exported.clear()
    traced_api.get(path)

    requests = [span for span in exported.get_finished_spans() if span.name.startswith("GET")]
    assert bool(requests) is traced


@pytest.mark.parametrize("traced", [True, False], ids=["traced", "not-traced"])
def test_replaying_a_traced_booking_exports_nothing(
    traced_api: FlaskClient,
    exported: InMemorySpanExporter,
    client_loop: ClientLoop,
    api_client: Client,
    traced: bool,
) -> None:
    user_id, trace_id = booked(traced_api, JANE)
    trace_of(exported, trace_id, until="RunWorkflow:BookingWorkflow")
    history = client_loop.run(api_client.get_workflow_handle(user_id).fetch_history())
    before = len(exported.get_finished_spans())

    plugins = [OpenTelemetryPlugin(add_temporal_spans=True)] if traced else []
    replayer = Replayer(
        workflows=[BookingWorkflow], workflow_runner=WORKFLOW_RUNNER, plugins=plugins
    )
    client_loop.run(replayer.replay_workflow(history))

    assert len(exported.get_finished_spans()) == before


def test_the_docs_show_janes_trace() -> None:
    assert JANES_TRACE in DOCS.read_text()
