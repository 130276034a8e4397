"""When a process traces: the OTEL_* variables decide; a setting it cannot use stops it."""

import pytest

from config import ConfigError
from tracing.provider import wanted

ENDPOINT = "http://127.0.0.1:6006"


@pytest.mark.parametrize(
    ("env", "traces"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "api"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{ENDPOINT}/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"}, True),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            True,
        ),
    ],
)
def test_tracing_is_on_only_where_an_otlp_endpoint_is_given(
    env: dict[str, str], traces: bool
) -> None:
    assert wanted(env) is traces


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
    ],
)
def test_an_exporter_or_protocol_not_installed_is_refused_by_name(
    setting: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, **setting})
