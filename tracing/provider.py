"""The process's tracer provider: spans exported over OTLP/HTTP where `OTEL_*` says, else none.

The exporter reads OpenTelemetry's standard variables itself (the endpoint,
headers, timeout, compression); this module decides only whether to trace
at all, and names the process when `OTEL_SERVICE_NAME` does not.
"""

import logging
import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from temporalio.contrib.opentelemetry import create_tracer_provider

from config import ConfigError

log = logging.getLogger("tracing")

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""Either one turns tracing on: where the spans go."""

PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
HTTP_PROTOBUF = "http/protobuf"
"""The one OTLP protocol installed here (requirements.txt): no gRPC stack in the processes."""


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Return whether the variables ask for traces: an OTLP endpoint, and not switched off.

    Raises:
        ConfigError: they ask for an exporter or protocol this project does not install.

    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none" or not any(env.get(name, "").strip() for name in ENDPOINTS):
        return False
    if exporter != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER must be otlp or none, not {exporter!r}")
    for name in PROTOCOLS:
        protocol = env.get(name, HTTP_PROTOBUF).strip().lower()
        if protocol != HTTP_PROTOBUF:
            raise ConfigError(f"{name} must be {HTTP_PROTOBUF}, not {protocol!r}")
    return True


def start_tracing(service_name: str) -> bool:
    """Set this process's tracer provider, if the variables ask for traces; say whether.

    Called once, as the process starts and before any Temporal client or
    worker is built: the SDK's plugin and the HTTP instrumentation use the
    global provider. It is Temporal's replay-safe one, so a span in a
    workflow is exported once however often the workflow replays; spans go
    out in batches, flushed as the process exits.

    Args:
        service_name: The process's name in the traces, unless OTEL_SERVICE_NAME
            (or OTEL_RESOURCE_ATTRIBUTES) names it.

    Raises:
        ConfigError: the variables ask for an exporter or protocol not installed.

    """
    if not wanted():
        return False
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = Resource.create({SERVICE_NAME: service_name})
    provider = create_tracer_provider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    endpoint = next(os.environ[name] for name in ENDPOINTS if os.environ.get(name, "").strip())
    log.info("Tracing: exporting spans as %r to %s", resource.attributes[SERVICE_NAME], endpoint)
    return True
