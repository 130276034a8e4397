"""The process's tracer provider: spans exported over OTLP/HTTP where `OTEL_*` says, else none.

OpenTelemetry's SDK reads its standard variables itself (headers, timeout,
compression, batching); this module decides whether to trace at all, and
where to, as the SDK's exporter would, and names the process when
`OTEL_SERVICE_NAME` does not. Off, it imports nothing of the SDK.
"""

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from config import ConfigError, number_from_env

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider

log = logging.getLogger("tracing")

TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""Where the spans go, as given."""
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""Where every signal goes: the spans to its `/v1/traces`."""

PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
"""The protocol for spans, then for every signal: the first one set applies."""
BATCH_SETTINGS = {
    "OTEL_BSP_SCHEDULE_DELAY": 1,
    "OTEL_BSP_EXPORT_TIMEOUT": 0,
    "OTEL_BSP_MAX_QUEUE_SIZE": 1,
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": 1,
}
"""The batching settings, by their least usable value: whole milliseconds, or spans."""
HTTP_PROTOBUF = "http/protobuf"
"""The one OTLP protocol installed here (requirements.txt): no gRPC stack in the processes."""


def traces_endpoint(env: Mapping[str, str] = os.environ) -> str:
    """Return the URL the spans are sent to; empty when neither endpoint variable is set."""
    if endpoint := env.get(TRACES_ENDPOINT, "").strip():
        return endpoint
    if endpoint := env.get(ENDPOINT, "").strip():
        return f"{endpoint.rstrip('/')}/v1/traces"
    return ""


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Return whether the variables ask for traces: an OTLP endpoint, and not switched off.

    Raises:
        ConfigError: they ask for an exporter or protocol this project does not install.

    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none" or not traces_endpoint(env):
        return False
    if exporter != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER must be otlp or none, not {exporter!r}")
    name = next((name for name in PROTOCOLS if env.get(name, "").strip()), None)
    if name is not None and (protocol := env[name].strip().lower()) != HTTP_PROTOBUF:
        raise ConfigError(f"{name} must be {HTTP_PROTOBUF}, not {protocol!r}")
    return True


def tracer_provider(
    resource: "Resource", *, shutdown_on_exit: bool = True
) -> "ReplaySafeTracerProvider":
    """Return Temporal's replay-safe tracer provider, exporting in batches to the endpoint.

    `shutdown_on_exit`: flushed and shut down as the process exits.

    Raises:
        ConfigError: an OTEL_* setting of the SDK's cannot be used (a batch size, say).

    """
    for name, low in BATCH_SETTINGS.items():
        # Read here, so that what the SDK would log and replace by its default is refused.
        number_from_env(os.environ, name, int, low, low=low, high=2**31 - 1)
    try:  # the SDK reads its limits and propagators as it is imported, the rest as it is built
        from opentelemetry import propagate  # noqa: F401
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from temporalio.contrib.opentelemetry import create_tracer_provider

        provider = create_tracer_provider(resource=resource, shutdown_on_exit=shutdown_on_exit)
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint()))
        )
    except ValueError as err:
        raise ConfigError(f"an OTEL_* setting cannot be used: {err}") from None
    return provider


def named(service_name: str) -> "Resource":
    """Return the process as the traces name it: OTEL_SERVICE_NAME's name, else `service_name`."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = Resource.create({SERVICE_NAME: service_name})
    return resource


def check_tracing() -> None:
    """Refuse, with ConfigError, tracing settings that `start_tracing` could not use.

    For a process that forks before it traces (the API's gunicorn): said once, before the fork.
    """
    if wanted():
        tracer_provider(named("check"), shutdown_on_exit=False).shutdown()


def start_tracing(service_name: str) -> bool:
    """Set this process's tracer provider, if the variables ask for traces; say whether.

    Called once, as the process starts and before any Temporal client or
    worker is built: the SDK's plugin and the HTTP instrumentation use the
    global provider. It is Temporal's replay-safe one, so a span in a
    workflow is exported once however often the workflow replays; spans go
    out in batches, flushed as the process exits. Only W3C `traceparent`
    crosses processes, unless OTEL_PROPAGATORS says otherwise: a caller's
    `baggage` would otherwise ride along into every booking's history.

    Args:
        service_name: The process's name in the traces, unless OTEL_SERVICE_NAME
            (or OTEL_RESOURCE_ATTRIBUTES) names it.

    Raises:
        ConfigError: the variables ask for something not installed, or unusable.

    """
    if not wanted():
        return False
    resource = named(service_name)
    provider = tracer_provider(resource)  # first: it refuses what the imports below would raise
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.resources import SERVICE_NAME
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    trace.set_tracer_provider(provider)
    if not os.environ.get("OTEL_PROPAGATORS", "").strip():
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    name = resource.attributes[SERVICE_NAME]
    log.info("Tracing: exporting spans as %r to %s", name, traces_endpoint())
    return True


def stop_tracing() -> None:
    """Send the spans still in the batch, and stop tracing (nothing, where it was off).

    For a process about to exit without the interpreter's teardown, where
    the provider's own flush at exit would not run.
    """
    from opentelemetry import trace

    shutdown = getattr(trace.get_tracer_provider(), "shutdown", None)
    if callable(shutdown):
        shutdown()
