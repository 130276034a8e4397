"""When a process traces: the OTEL_* variables decide; a setting it cannot use stops it."""

import os
import subprocess
import sys

import pytest

from config import ConfigError
from tools.processes import ROOT, free_port
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


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be"),
        ({"OTEL_PROPAGATORS": "nosuch"}, "Propagator nosuch not found"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "5s"}, "OTEL_BSP_SCHEDULE_DELAY must be a number"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE must be between 1"),
        ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "x"}, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT must be"),
    ],
)
def test_the_api_refuses_a_tracing_setting_it_cannot_use_before_it_serves(
    setting: dict[str, str], said: str
) -> None:
    # In a process of its own: the SDK reads some settings once, as it is imported.
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "PORT": str(free_port())}
    run = subprocess.run(
        [sys.executable, "starter.py"],
        cwd=ROOT,
        env={**env, **setting},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("starter: ")
    assert said in run.stderr
    assert "Traceback" not in run.stderr


def test_a_process_that_does_not_trace_loads_no_tracing_sdk() -> None:
    program = (
        "import sys, starter, run_worker, providers\n"
        "from tracing.provider import check_tracing, start_tracing\n"
        "check_tracing()\n"
        "assert not start_tracing('trip-booking-worker')\n"
        "print(sorted(m for m in sys.modules if m.startswith(LOADED)))\n"
    ).replace("LOADED", repr(TRACING_MODULES))
    run = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert run.stdout == "[]\n"


TRACING_MODULES = (
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "temporalio.contrib.opentelemetry",
)
"""What only a traced process needs: the SDK, its exporter, the instrumentation, the plugin."""
