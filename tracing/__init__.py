"""Tracing: one OpenTelemetry trace per booking, across the API, Temporal, the worker and providers.

Off unless OpenTelemetry's own variables say where to export
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`):
then each process exports its spans over OTLP/HTTP (docs/tracing.md).

- `provider`: the process's tracer provider, from the `OTEL_*` variables
- `instrument`: where spans come from (Temporal's plugin, Flask, aiohttp)
"""
