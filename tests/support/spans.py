"""Spans as the tests read them, from the SDK's in-memory exporter or an OTLP receiver."""

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import format_span_id, format_trace_id

JANES_TRACE = """\
POST /book
  StartWorkflow:BookingWorkflow
    RunWorkflow:BookingWorkflow
      StartActivity:book_car
        RunActivity:book_car
          POST
            POST /{leg}/book
      StartActivity:book_hotel
        RunActivity:book_hotel
          POST
            POST /{leg}/book
        RunActivity:book_hotel
          POST
            POST /{leg}/book
      compensation
        undo hotel
          StartActivity:undo_book_hotel
            RunActivity:undo_book_hotel
              POST
                POST /{leg}/undo
        undo car
          StartActivity:undo_book_car
            RunActivity:undo_book_car
              POST
                POST /{leg}/undo"""
"""Jane's booking (the hotel down on its first attempt, then refusing), as a trace."""


@dataclass(frozen=True)
class Span:
    """One exported span: its ids, its parent's, its name, what it says, when it started."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: int
    attributes: dict[str, Any] = field(hash=False)
    service: str = ""


def from_sdk(span: ReadableSpan) -> Span:
    """Return an in-memory exporter's span."""
    context, parent = span.context, span.parent
    assert context is not None
    return Span(
        format_trace_id(context.trace_id),
        format_span_id(context.span_id),
        format_span_id(parent.span_id) if parent is not None else None,
        span.name,
        span.start_time or 0,
        dict(span.attributes or {}),
        str(span.resource.attributes.get("service.name", "")),
    )


def outline(spans: Iterable[Span]) -> str:
    """Return a trace as an indented outline of span names, children in the order they started.

    A span whose parent is not among `spans` starts a line at the left.
    """
    spans = list(spans)
    ids = {span.span_id for span in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in spans:
        children[span.parent_id if span.parent_id in ids else None].append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda span: span.start):
            lines.append("  " * depth + span.name)
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def named(spans: Sequence[Span], name: str) -> list[Span]:
    """Return the spans called `name`, in the order they started."""
    return sorted((span for span in spans if span.name == name), key=lambda span: span.start)


class Receiver:
    """An OTLP/HTTP receiver on a loopback port, in a thread: what the processes export."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the OTLP receiver did not start"

    def received(self) -> list[Span]:
        """Return every span received so far."""
        with self._lock:
            return list(self.spans)

    def stop(self) -> None:
        """Stop receiving."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest.FromString(await request.read())
        with self._lock:
            self.requests += 1
            self.spans.extend(_spans_of(message))
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def _run(self, port: int) -> None:
        async def serving() -> None:
            app = web.Application()
            app.router.add_post("/v1/traces", self._export)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self._started.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop.run_until_complete(serving())
        self._loop.close()


def _spans_of(message: ExportTraceServiceRequest) -> Iterable[Span]:
    for resource_spans in message.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    span.trace_id.hex(),
                    span.span_id.hex(),
                    span.parent_span_id.hex() or None,
                    span.name,
                    span.start_time_unix_nano,
                    {a.key: _value(a.value) for a in span.attributes},
                    str(resource.get("service.name", "")),
                )


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
