"""The benchmark's OTLP collector: where the traced stack's processes export their spans.

A process of its own (`python -m tools.bench.collector PORT`), so that
decoding the spans takes nothing from the load generator's interpreter. It
takes `POST /v1/traces` (OTLP/HTTP, protobuf, as `tracing/provider.py`'s
exporter sends them), counts the requests, the spans, each service's spans,
and each trace's spans with the name of its root (the span without a parent:
"POST /book" for a booking through the API), keeps nothing else, and answers
an empty `ExportTraceServiceResponse`; `GET /stats` says what it has counted,
as JSON.
"""

import asyncio
import json
import signal
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tools.children import Child
from tools.processes import ROOT, answers, free_port, wait_until

NO_ROOT = "(no root)"
"""Where the traces whose root span has not come are counted."""
QUIET_SECONDS = 7.0
"""How long nothing must arrive before the spans are all in: the SDK's batch
processor exports every 5 s (OTEL_BSP_SCHEDULE_DELAY's default)."""


class Counts:
    """What the collector has received so far."""

    def __init__(self) -> None:
        self.requests = 0
        self.spans = 0
        self.services: Counter[str] = Counter()
        self.traces: Counter[bytes] = Counter()
        """Each trace's spans so far."""
        self.roots: dict[bytes, str] = {}
        """Each trace's root span's name, once it has come."""

    def add(self, message: ExportTraceServiceRequest) -> None:
        """Count one export request's spans."""
        self.requests += 1
        for resource_spans in message.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans += len(scope_spans.spans)
                self.services[service] += len(scope_spans.spans)
                for span in scope_spans.spans:
                    self.traces[span.trace_id] += 1
                    if not span.parent_span_id:
                        self.roots[span.trace_id] = span.name

    def as_json(self) -> dict[str, Any]:
        """Return the counts as GET /stats answers them."""
        by_root: dict[str, dict[str, int]] = {}
        for trace_id, spans in self.traces.items():
            found = by_root.setdefault(self.roots.get(trace_id, NO_ROOT), {"traces": 0, "spans": 0})
            found["traces"] += 1
            found["spans"] += spans
        return {
            "requests": self.requests,
            "spans": self.spans,
            "traces": len(self.traces),
            "spans_by_service": dict(sorted(self.services.items())),
            "traces_by_root": dict(sorted(by_root.items())),
        }


def application(counts: Counts) -> web.Application:
    """Return the collector's app: POST /v1/traces counts, GET /stats tells."""

    async def export(request: web.Request) -> web.Response:
        counts.add(ExportTraceServiceRequest.FromString(await request.read()))
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(counts.as_json())

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", export)
    app.router.add_get("/stats", stats)
    return app


async def serve(port: int) -> None:
    """Serve on loopback `port` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(application(Counts()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"collector serving on http://127.0.0.1:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Received:
    """What the collector had counted when asked."""

    requests: int
    spans: int
    traces: int
    spans_by_service: dict[str, int]
    traces_by_root: dict[str, dict[str, int]]
    """Each root span's name: its traces, and the spans in them."""


class Collector:
    """The collector as a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        """The OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): spans go to its /v1/traces."""
        command = [sys.executable, "-m", "tools.bench.collector", str(self.port)]
        self.child = Child(command, cwd=ROOT, output="drop")
        wait_until(lambda: answers(f"{self.url}/stats"), self.child.process, "the OTLP collector")
        self.pid = self.child.process.pid
        """Its process (setpriv execs it): whose CPU the traced rows also count."""

    def received(self) -> Received:
        """Return what it has counted so far."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as response:
            return Received(**json.loads(response.read()))

    def settled(self, quiet: float = QUIET_SECONDS, limit: float = 60.0) -> Received:
        """Return what it has counted once nothing has arrived for `quiet` seconds.

        Gives up waiting after `limit` seconds, and returns what it has then.
        """
        last, since, deadline = self.received(), time.monotonic(), time.monotonic() + limit
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.received()
            if now != last:
                last, since = now, time.monotonic()
        return last

    async def quiet(self) -> Received:
        """Return `settled()`'s counts, waited for in a thread, off the event loop."""
        return await asyncio.to_thread(self.settled)

    def stop(self) -> None:
        """Stop the collector."""
        self.child.stop(10)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
