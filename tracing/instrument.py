"""Where the spans come from: Temporal's plugin, the API's Flask app, and aiohttp on both ends.

Each is added only where `start_tracing` turned tracing on, and imported
only then: a process that does not trace loads none of them.
"""

from flask import Flask
from temporalio.client import Plugin

UNTRACED_ROUTES = r"://[^/]+/(healthz|readyz|metrics)(\?|$)"
"""The API's routes polled by probes and scrapers: a trace each would bury the bookings'."""


def temporal_plugins(tracing: bool) -> list[Plugin]:
    """Return the plugins for the process's one Temporal client.

    Its workers take them from the client: registered on the worker as
    well, every span would be made twice. `add_temporal_spans` makes the
    SDK's own spans (StartWorkflow, RunWorkflow, StartActivity, RunActivity),
    without which a booking's trace would have no Temporal in it.
    """
    if not tracing:
        return []
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def trace_flask(app: Flask) -> None:
    """Give each request to `app` a server span, continuing a caller's W3C `traceparent`.

    A `traceparent` that cannot be read is ignored: the request starts a trace of its own.
    """
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    # The instrumentation ships no type hints.
    FlaskInstrumentor.instrument_app(app, excluded_urls=UNTRACED_ROUTES)  # type: ignore[no-untyped-call]


def trace_aiohttp() -> None:
    """Trace aiohttp's client calls (the activities') and servers (the providers').

    A client call sends its span as `traceparent`, which the providers' server
    span continues. Called before the providers' app is built: the server's
    instrumentation is a subclass of `aiohttp.web.Application`.
    """
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    AioHttpClientInstrumentor().instrument()
    AioHttpServerInstrumentor().instrument()
